"""Drop-in shim: trnlab stands in for AWS's `nki` (current front end) and `neuronxcc.nki` (Beta 1).

install() puts an import hook in front of sys.meta_path that maps
    nki, nki.language, nki.isa, nki.isa.constants, nki.typing, nki.compiler, nki.collectives, nki.tensor
        -> trnlab.nki.*
    neuronxcc -> an empty package;  neuronxcc.nki[.X] -> trnlab.nki_beta1[.X]   (imported lazily)
The aliases are the trnlab modules themselves (`import nki.language as nl` gives trnlab.nki.language).
A real installed `nki` / `neuronxcc` is never shadowed unless forced (install(force=True) or
TRNLAB_FORCE_COMPAT=1).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import runpy
import sys
import sysconfig
import traceback
import types

from trnlab import config
from trnlab.errors import TrnlabError

_NKI = {
    "nki": "trnlab.nki",
    "nki.language": "trnlab.nki.language",
    "nki.isa": "trnlab.nki.isa",
    "nki.isa.constants": "trnlab.nki.isa_constants",
    "nki.typing": "trnlab.nki.typing",
    "nki.compiler": "trnlab.nki.compiler",
    "nki.collectives": "trnlab.nki.collectives",
    "nki.tensor": "trnlab.nki.ntensor",
}
_BETA1_PACKAGE = "trnlab.nki_beta1"
# Framework-only packages kernel scripts import (often unused): stand-ins that fail only when used.
_FRAMEWORKS = ("torch_xla", "torch_neuronx", "jax_neuronx", "libneuronxla")
_STUB = "stub"


def target_of(name: str) -> str | None:
    """The trnlab module standing in for `name`, or None when the shim does not provide it."""
    if name in _NKI:
        return _NKI[name]
    if name == "neuronxcc":
        return ""                                   # an empty namespace package
    if name == "neuronxcc.nki" or name.startswith("neuronxcc.nki."):
        return _BETA1_PACKAGE + name[len("neuronxcc.nki"):]
    if name.startswith("neuronxcc.") or name.split(".")[0] in _FRAMEWORKS:
        return _STUB
    return None


class FrameworkUnavailableError(TrnlabError, RuntimeError):
    """A script used a framework-only module (torch_xla, torch_neuronx, ...) that trnlab stands in for."""


class _Missing:
    """An attribute of a stand-in module: any use (call, attribute, iteration, ...) raises, naming it."""

    def __init__(self, path: str):
        self._path = path

    def _fail(self, *_, **__):
        from trnlab.core.srcloc import user_location
        top = self._path.split(".")[0]
        raise FrameworkUnavailableError(
            f"`{self._path}` was used, but {top} is not installed and trnlab only stands in for it so that "
            f"importing it works: trnlab runs NKI kernels on its simulated NeuronCore, so call the kernel with "
            f"numpy arrays or CPU torch tensors instead of moving them to an XLA/Neuron device. At {user_location()}")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Missing(f"{self._path}.{name}")

    __call__ = __iter__ = __bool__ = __index__ = __int__ = __float__ = __enter__ = _fail

    def __repr__(self) -> str:
        return f"<trnlab stand-in for {self._path}>"


def _stub_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name, f"trnlab compat stand-in for {name}: importing works, using it raises")
    module.__path__ = []

    def missing(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{name}.{attr}")
    module.__getattr__ = missing
    return module


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target
        self.original_spec = None

    def create_module(self, spec):
        if self.target == _STUB:
            return _stub_module(spec.name)
        if not self.target:
            module = types.ModuleType(spec.name, "trnlab compat stand-in for AWS's neuronxcc package")
            module.__path__ = []
            return module
        module = importlib.import_module(self.target)
        self.original_spec = module.__spec__
        return module

    def exec_module(self, module):
        if self.original_spec is not None:   # the import system re-stamped __spec__ with the alias: restore
            module.__spec__ = self.original_spec


class ShimFinder(importlib.abc.MetaPathFinder):
    """Resolves the nki / neuronxcc names of the enabled groups to trnlab modules."""

    def __init__(self, groups: set, stubs: set = frozenset()):
        self.groups = set(groups)
        self.stubs = set(stubs)         # framework-only packages (torch_xla, ...) given stand-ins

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] not in self.groups | self.stubs:
            return None
        mapped = target_of(fullname)
        if mapped is None or (mapped == _STUB and not _imported_by_user_code()):
            return None
        if mapped and mapped != _STUB and importlib.util.find_spec(mapped.rsplit(".", 1)[0]) is None:
            return None
        is_pkg = mapped in ("", _STUB) or fullname in ("nki", "nki.isa", "neuronxcc.nki")
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(mapped), is_package=is_pkg)


_finder: ShimFinder | None = None


def _imported_by_user_code() -> bool:
    """True when the import statement is the script's (or its test's) own: installed libraries probing
    for torch_xla (importlib.util.find_spec in transformers, accelerate, ...) must keep seeing it absent."""
    frame = sys._getframe(2)
    while frame is not None and ("importlib" in frame.f_code.co_filename or
                                 frame.f_code.co_filename.startswith("<frozen")):
        frame = frame.f_back
    if frame is None:
        return False
    path = os.path.abspath(frame.f_code.co_filename)
    return not ("site-packages" in path or "dist-packages" in path or path.startswith(_STDLIB))


_STDLIB = os.path.abspath(sysconfig.get_paths()["stdlib"]) + os.sep


def _real_package_installed(top: str) -> bool:
    """True when `top` is importable from somewhere other than this shim."""
    mod = sys.modules.get(top)
    if mod is not None:
        return not _is_ours(mod)
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def _is_ours(mod) -> bool:
    return getattr(mod, "__name__", "").startswith("trnlab") or isinstance(getattr(mod, "__loader__", None),
                                                                            _AliasLoader)


def install(force: bool = False) -> list[str]:
    """Register the shim; returns the top-level names it now provides ('nki', 'neuronxcc')."""
    global _finder
    force = force or config.force_compat()
    if _finder is not None:
        if not force:
            return sorted(_finder.groups)
        uninstall()
    groups = {top for top in ("nki", "neuronxcc") if force or not _real_package_installed(top)}
    if force:
        for name in [n for n in sys.modules if n.split(".")[0] in groups]:
            del sys.modules[name]
    _finder = ShimFinder(groups, {top for top in _FRAMEWORKS if not _real_package_installed(top)})
    sys.meta_path.insert(0, _finder)
    return sorted(groups)


def uninstall() -> None:
    """Remove the shim and forget the alias modules it created."""
    global _finder
    if _finder is None:
        return
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
    for name in [n for n in sys.modules if n.split(".")[0] in _finder.groups | _finder.stubs]:
        if _is_ours(sys.modules[name]):
            del sys.modules[name]
    _finder = None


def installed() -> list[str]:
    return sorted(_finder.groups) if _finder is not None else []


# --- running third-party code with the shim active ----------------------------------------------------------
class _Environment:
    """Temporarily set argv, sys.path[0] and the target override; restores them on exit."""

    def __init__(self, argv: list[str] | None, path0: str | None, target: str | None):
        self.argv, self.path0, self.target = argv, path0, target

    def __enter__(self):
        self.saved = (list(sys.argv), list(sys.path), os.environ.get("NEURON_PLATFORM_TARGET_OVERRIDE"))
        if self.argv is not None:
            sys.argv = list(self.argv)
        if self.path0 is not None:
            sys.path.insert(0, self.path0)
        if self.target:
            os.environ["NEURON_PLATFORM_TARGET_OVERRIDE"] = self.target
        return self

    def __exit__(self, *exc):
        sys.argv, sys.path[:], old = self.saved[0], self.saved[1], self.saved[2]
        if old is None:
            os.environ.pop("NEURON_PLATFORM_TARGET_OVERRIDE", None)
        else:
            os.environ["NEURON_PLATFORM_TARGET_OVERRIDE"] = old


def run_script(path: str, args: list[str] | None = None, target: str | None = None) -> int:
    """Run a Python script as __main__ with the shim active; returns its exit status."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        print(f"trnlab run: no such script: {path}", file=sys.stderr)
        return 2
    install()
    with _Environment([path] + list(args or []), os.path.dirname(path), target):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as exc:
            return _exit_code(exc.code)
        except Exception as exc:
            hint = missing_extra(exc)
            if hint:
                print(f"trnlab run: {hint}", file=sys.stderr)
            else:
                print_script_error(exc, path, sys.stderr)
            return 1
    return 0


# optional dependency -> the trnlab extra that installs it (pyproject.toml [project.optional-dependencies])
_EXTRAS = {"torch": "torch", "transformers": "hf", "pytest": "test", "xdist": "test", "hypothesis": "test"}


def missing_extra(exc: BaseException) -> str | None:
    """One line naming the extra to install when `exc` is a missing optional dependency of trnlab."""
    if not isinstance(exc, ImportError):
        return None
    top = (getattr(exc, "name", None) or "").split(".")[0]
    extra = _EXTRAS.get(top)
    if extra is None:
        return None
    return f"`{top}` is not installed; install trnlab's `{extra}` extra: pip install 'trnlab[{extra}]'"


def print_script_error(exc: BaseException, path: str, file) -> None:
    """A trnlab error (a kernel broke a rule) is one clear line naming the rule, the value and the kernel's
    file:line; any other exception gets the traceback `python script.py` would print (trnlab's runner frames cut)."""
    from trnlab.errors import TrnlabError
    if isinstance(exc, TrnlabError) or (isinstance(exc, NotImplementedError) and _raised_in_trnlab(exc)):
        print(f"{type(exc).__name__}: {exc}", file=file)
        return
    tb = exc.__traceback__
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != os.path.abspath(path):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__, file=file)


def _raised_in_trnlab(exc: BaseException) -> bool:
    """True when the innermost frame is trnlab's own code (an API it does not model), not the script's."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(package + os.sep)


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_pytest(args: list[str] | None = None, target: str | None = None) -> int:
    """Run pytest with the shim active (also in xdist workers, through the trnlab.compat.pytest_plugin)."""
    try:
        import pytest
    except ImportError as exc:
        print(f"trnlab pytest: {missing_extra(exc) or exc}", file=sys.stderr)
        return 2
    install()
    with _Environment(None, None, target):
        return int(pytest.main(["-p", "trnlab.compat.pytest_plugin"] + list(args or [])))


__all__ = ["install", "uninstall", "installed", "run_script", "run_pytest", "target_of", "missing_extra",
           "FrameworkUnavailableError"]
