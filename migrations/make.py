"""`python -m migrations.make [APP]`: tortoise makemigrations, then lift constraints out of
CreateModel into AddConstraint operations.

tortoise 1.1.9's CreateModel ignores `Meta.constraints`, and on SQLite adding a CHECK remakes the
table without `unique_together`. So models declare uniqueness and checks in `Meta.constraints`,
and each new migration adds them after the table: CHECKs first, then UNIQUEs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
CREATE = re.compile(r"ops\.CreateModel\(\n\s+name='(?P<name>\w+)',.*?\n\s+bases=", re.S)
CONSTRAINTS = re.compile(r"'constraints': \[(?P<body>.*?)\](?=, '|\})", re.S)
INDEXES = re.compile(r"'indexes': \[(?P<body>.*?)\](?=, '|\})", re.S)
ITEM = re.compile(r"(CheckConstraint|UniqueConstraint|Index)\((?:[^()]|\([^()]*\))*\)")


def split(path: Path) -> bool:
    """Rewrite one migration file; True when it changed."""
    text = path.read_text()
    adds: list[str] = []
    out = text
    for match in CREATE.finditer(text):
        block = match.group(0)
        found = CONSTRAINTS.search(block)
        if not found:
            continue
        items = [m.group(0) for m in ITEM.finditer(found.group("body"))]
        items.sort(key=lambda item: not item.startswith("CheckConstraint"))
        adds += [
            f"        ops.AddConstraint(model_name='{match.group('name')}', constraint={item}),\n"
            for item in items
        ]
        cleaned = block.replace(found.group(0) + ", ", "").replace(found.group(0), "")
        indexes = INDEXES.search(cleaned)
        if indexes and any(i.startswith("CheckConstraint") for i in items):
            # the SQLite table remake for a CHECK drops indexes made with the table
            adds += [
                f"        ops.AddIndex(model_name='{match.group('name')}', index={m.group(0)}),\n"
                for m in ITEM.finditer(indexes.group("body"))
            ]
            cleaned = cleaned.replace(indexes.group(0) + ", ", "").replace(indexes.group(0), "")
        out = out.replace(block, cleaned)
    if not adds:
        return False
    if "UniqueConstraint" in out and not re.search(r"import .*\bUniqueConstraint\b", out):
        out = out.replace(
            "from tortoise import migrations\n",
            "from tortoise import migrations\nfrom tortoise.migrations.constraints import "
            "UniqueConstraint\n",
            1,
        )
    if "CheckConstraint" in out and not re.search(r"import .*\bCheckConstraint\b", out):
        out = out.replace(
            "from tortoise import migrations\n",
            "from tortoise import migrations\nfrom tortoise.migrations.constraints import "
            "CheckConstraint\n",
            1,
        )
    end = out.rindex("    ]\n")
    path.write_text(out[:end] + "".join(adds) + out[end:])
    return True


def main() -> None:
    """Run makemigrations and post-process the files it wrote."""
    before = {p for p in HERE.glob("*/0*.py")}
    subprocess.run(["tortoise", "makemigrations", *sys.argv[1:]], check=True)
    for path in sorted(set(HERE.glob("*/0*.py")) - before):
        if split(path):
            sys.stdout.write(f"constraints lifted into AddConstraint: {path}\n")


if __name__ == "__main__":
    main()
