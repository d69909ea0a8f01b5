"""Start-up hook: registers DRConv with Ultralytics in every Python process, including ``yolo`` and DDP workers.

The package installs ``drconv_yolo_startup.pth`` (and, for Python >= 3.15, ``drconv_yolo_startup.start``) into
site-packages; at interpreter start-up it calls ``install()``, which puts a tiny finder at the front of
``sys.meta_path``. The moment ``ultralytics.nn.tasks`` finishes executing, the finder's loader calls
``drconv_yolo.plugin.register()``. Nothing here imports torch or Ultralytics, nothing here raises, and
``DRCONV_YOLO_AUTOLOAD=0`` turns the finder off. The package's ``__init__`` calls ``install()`` too, which registers
at once when Ultralytics is already loaded: that is how loading a DRConv checkpoint registers.
"""

import os
import sys

TARGET = "ultralytics.nn.tasks"
ENV = "DRCONV_YOLO_AUTOLOAD"


def enabled() -> bool:
    """False when the user opted out with DRCONV_YOLO_AUTOLOAD=0 (or false/no/off)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _register() -> None:
    try:
        from drconv_yolo.plugin import register

        register()
    except Exception as e:  # never break the user's program over the plugin
        print(f"drconv-yolo: registration with Ultralytics failed: {e!r}", file=sys.stderr)


class _Loader:
    """Wraps the real loader of ``ultralytics.nn.tasks``: execute it, then register."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _register()

    def __getattr__(self, name):
        return getattr(self.loader, name)


class Finder:
    """A meta-path finder that only looks at ``ultralytics.nn.tasks`` and hands its spec a registering loader."""

    def find_spec(self, name, path=None, target=None):
        if name != TARGET:
            return None
        try:
            for finder in sys.meta_path:
                if finder is self or isinstance(finder, Finder) or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                        spec.loader = _Loader(spec.loader)
                    return spec
        except Exception:
            return None
        return None


def install() -> None:
    """Register now if Ultralytics' tasks module is already loaded (importing the package, as loading a DRConv
    checkpoint does, asks for DRConv); else install the finder (idempotent) unless DRCONV_YOLO_AUTOLOAD=0."""
    try:
        if TARGET in sys.modules:
            _register()
            return
        if not enabled():
            return
        if not any(isinstance(f, Finder) for f in sys.meta_path):
            sys.meta_path.insert(0, Finder())
    except Exception:
        pass
