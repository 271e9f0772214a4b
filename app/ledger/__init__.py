"""The double-entry ledger: accounts, transfers, entries, issuance lots and holds."""
