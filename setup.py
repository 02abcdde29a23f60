"""Package list for the three source roots (package-dir mapping lives in pyproject.toml).

`components/` and `pipelines/` are installed as `guardsmith.components` and
`guardsmith.pipelines`; setuptools' declarative `find` cannot prefix them, so they are listed here.
"""
from setuptools import find_packages, setup


def _mapped(root: str, prefix: str) -> list[str]:
    return [prefix] + [f"{prefix}.{name}" for name in find_packages(root)]


setup(
    packages=find_packages("src")
    + _mapped("components", "guardsmith.components")
    + _mapped("pipelines", "guardsmith.pipelines")
)
