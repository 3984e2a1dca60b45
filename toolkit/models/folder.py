"""A user's file and its folder: `path/to/model.py` imports its sibling modules.

`import_file(path)` imports the file as `edgeloop_user_<n>.<stem>`, a module of a package made
for its folder, and while it loads (and while `folder_scope(module)` is held, e.g. during the
user's function call) a top-level import of a module that lives in the same folder
(`from blocks import Bneck` beside `model.py`, or a sub-package `blocks/`) resolves to that
folder's file, under the package's name (`edgeloop_user_<n>.blocks`). Nothing leaks: the plain
names (`blocks`) are taken out of `sys.modules` afterwards, so two users' folders that both
hold a `blocks.py` never see each other's; the package's own names stay, so the classes pickle
(Ray) under a name only this process uses. The standard library, and any module imported
before the load, win over a sibling of the same name. The file itself runs afresh on each
load; its siblings run once per process (as Python's own imports do).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

PREFIX = "edgeloop_user_"
_lock = threading.RLock()  # sys.meta_path and sys.modules are process-wide
_packages: dict[str, str] = {}  # resolved folder -> its package name in this process


class _AliasLoader(importlib.abc.Loader):
    """Serves a plain name (`blocks`) with the package's module (`edgeloop_user_3.blocks`)."""

    def __init__(self, real_name: str) -> None:
        self.real_name = real_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return importlib.import_module(self.real_name)

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the package's module ran when it was imported."""


class _SiblingFinder(importlib.abc.MetaPathFinder):
    """Finds top-level names (and their sub-modules) that are files or packages in `folder`."""

    def __init__(self, folder: Path, package: str) -> None:
        self.folder, self.package = folder, package

    def owns(self, name: str) -> bool:
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top.startswith(PREFIX):
            return False
        return (self.folder / f"{top}.py").is_file() or (self.folder / top / "__init__.py"
                                                          ).is_file()

    def find_spec(self, fullname: str, path: Any = None,
                  target: Any = None) -> Optional[importlib.machinery.ModuleSpec]:
        if not self.owns(fullname):
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(f"{self.package}.{fullname}"))


def _package_for(folder: Path, name: Optional[str] = None) -> str:
    """The package standing for `folder` in this process (made, and registered, once);
    `name` asks for that name (a worker re-creating the driver's package)."""
    name = name or _packages.get(str(folder)) or f"{PREFIX}{len(_packages)}"
    _packages[str(folder)] = name
    if name not in sys.modules:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        package = importlib.util.module_from_spec(spec)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    return name


@contextlib.contextmanager
def _scope(folder: Path, package: str) -> Iterator[None]:
    finder = _SiblingFinder(folder, package)
    with _lock:
        before = set(sys.modules)  # a module imported already (a library's) keeps its name
        sys.meta_path.insert(0, finder)
        try:
            yield
        finally:
            sys.meta_path.remove(finder)
            for name in [n for n in sys.modules if n not in before and finder.owns(n)]:
                del sys.modules[name]


def import_file(path: Path) -> types.ModuleType:
    """Imports `path` (a `.py` file) with its folder's modules importable, run afresh.

    Raises:
        Exception: whatever the file raised while it ran (the caller names the file).
    """
    path = Path(path).expanduser().resolve()
    folder = path.parent
    with _lock:
        package = _package_for(folder)
        name = f"{package}.{path.stem.replace('.', '_')}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            with _scope(folder, package):
                spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    return module


@contextlib.contextmanager
def folder_scope(module: Any) -> Iterator[None]:
    """While held, top-level imports of the folder's siblings resolve as during `import_file`
    (for a function that imports lazily); a no-op for a module that is not a user's file."""
    name = getattr(module, "__name__", "") or ""
    package = name.partition(".")[0]
    folder = getattr(sys.modules.get(package), "__path__", None)
    if not name.startswith(PREFIX) or not folder:
        yield
        return
    with _scope(Path(folder[0]), package):
        yield


def recorded_modules(module: Any) -> list[tuple[str, str]]:
    """(module name, file relative to its folder) of every user module that defines a class
    of the torch `module`: what a Ray worker imports (`import_recorded`) before it unpickles
    the model, from its copy of the folder."""
    found = {}
    for cls in {type(m) for m in module.modules()}:
        name = getattr(cls, "__module__", "") or ""
        loaded = sys.modules.get(name)
        package = sys.modules.get(name.partition(".")[0])
        folder = getattr(package, "__path__", None)
        if name.startswith(PREFIX) and getattr(loaded, "__file__", None) and folder:
            found[name] = Path(loaded.__file__).relative_to(folder[0]).as_posix()
    return sorted(found.items())


def import_recorded(modules: list[tuple[str, str]], folder: Path) -> None:
    """In a worker: imports the driver's user modules (`recorded_modules`) under the same
    names from `folder`, its copy of the model's folder, with the siblings importable.

    Raises:
        ModelFileError: a file is not in `folder` (it did not travel with the job).
    """
    from toolkit.errors import ModelFileError

    folder = Path(folder).resolve()
    with _lock:
        for name, relative in modules:
            if name in sys.modules:
                continue
            path = folder / relative
            if not path.is_file():
                raise ModelFileError(f"model file {relative} did not travel with the job "
                                     f"(not in the worker's working directory {folder})")
            package = _package_for(folder, name.partition(".")[0])
            with _scope(folder, package):
                try:
                    importlib.import_module(name)
                except ModuleNotFoundError:  # a file name that is no module name (a.b.py)
                    spec = importlib.util.spec_from_file_location(name, path)
                    loaded = importlib.util.module_from_spec(spec)
                    sys.modules[name] = loaded
                    spec.loader.exec_module(loaded)
