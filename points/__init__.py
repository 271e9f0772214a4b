"""points domain: conversion (conversion.py), behavior scenarios and experience (behaviors.py),
growth levels (growth.py), credit standing (credit_rules.py pure, credit.py kept current,
misconduct.py flags and staff reads), the carbon account read in one statement
(account_view.py); pure rules in rules.py."""
