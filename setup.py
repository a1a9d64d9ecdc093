"""Only what pyproject.toml cannot say: the top-level configs/ directory ships as the
``selfalign_configs`` package, so an installed wheel has the configs a checkout has
(harness.common.shipped_configs finds them either way)."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["harness*", "pipeline*", "tasks*", "reports*", "orchestration*"]) + ["selfalign_configs"],
    package_dir={"selfalign_configs": "configs"},
)
