"""Map the repository's top-level folders onto the ``soberana`` import namespace.

The layout keeps the operator under ``operator/`` and the serving code under ``serving/`` (see
ARCHITECTURE.md), but ``operator`` is a standard-library module, so each folder is installed as a
subpackage of ``soberana`` instead: ``operator/`` -> ``soberana.operator``, ``serving/`` ->
``soberana.serving``. Everything else about the distribution lives in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = {"soberana.operator": "operator", "soberana.serving": "serving"}

packages: list[str] = []
package_dir: dict[str, str] = {}
for package, folder in FOLDERS.items():
    packages.append(package)
    package_dir[package] = folder
    packages.extend(f"{package}.{sub}" for sub in find_packages(folder))

setup(packages=packages, package_dir=package_dir, include_package_data=True)
