"""`python -m chatnet.native_build`: compile the hot path (chatnet/native.py) with mypyc.

Run by `make install`; it does nothing when the build matches the sources, and it exits 0
when this machine can't compile (no C compiler, no Python headers): the sources run then.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from chatnet.native import BUILD, MANIFEST, MODULES, PACKAGE, built_from, sources


def not_built(reason: str) -> int:
    """Say why there is no build; 0, because the Python modules run then."""
    print(f"chatnet: no compiled hot path ({reason}); the Python modules run", file=sys.stderr)
    return 0


def build() -> int:
    """Compile MODULES into BUILD; 0 also when this machine can't (the sources run then)."""
    made_from = sources()
    if built_from() == made_from:
        print("chatnet: the compiled hot path is up to date")
        return 0
    try:
        from mypyc.build import mypycify
        from setuptools import setup
    except ImportError as exc:
        return not_built(str(exc))
    shutil.rmtree(BUILD, ignore_errors=True)  # nothing of an older build is left to shadow a source
    root = PACKAGE.parent
    work = root / "build" / "mypyc"
    os.chdir(root)  # mypyc names the modules by their paths: chatnet/session.py -> chatnet.session
    paths = [f"chatnet/{name}.py" for name in MODULES]
    print(f"chatnet: compiling the hot path with mypyc ({len(paths)} modules, about a minute)")
    try:
        extensions = mypycify(paths, opt_level="3", group_name="chatnet.native_lib", target_dir=str(work / "c"))
        for extension in extensions:
            # The shims reach the group's functions through a capsule, so only the module
            # init need be exported: calls inside the library go direct (≈ 3 % a line).
            extension.extra_compile_args.append("-fvisibility=hidden")
        setup(
            name="chatnet-native",
            packages=[],
            py_modules=[],  # the extension modules only: no package discovery in the tree
            script_args=["--quiet", "build_ext", "--build-lib", str(BUILD), "--build-temp", str(work / "temp")],
            ext_modules=extensions,
        )
    except (Exception, SystemExit) as exc:  # no compiler, no Python headers; mypyc's errors are printed above
        return not_built(f"{type(exc).__name__}: {exc}")
    MANIFEST.write_text(json.dumps(made_from, indent=1))
    print(f"chatnet: compiled hot path in {BUILD.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(build())
