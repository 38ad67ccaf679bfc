"""Import every module of atex_ci: an undeclared runtime dependency fails here."""

import importlib
import pkgutil

import atex_ci

names = [atex_ci.__name__]
names += [
    m.name
    for m in pkgutil.walk_packages(atex_ci.__path__, atex_ci.__name__ + ".")
    if not m.name.endswith(".__main__")  # importing it runs the CLI
]
for name in names:
    importlib.import_module(name)
print(f"imported {len(names)} modules")
