"""Ships the repository's top-level `profiles/` inside the wheel, as `toolkit/bundled_profiles/`.

Everything else about the build is in pyproject.toml. `profiles/` stays at the top of the
repository (the project's fixed layout), where package data cannot reach it, so `build_py`
copies it into the built package; `toolkit.paths.profile_dirs()` searches that copy in an
installed wheel and the checkout's `profiles/` in an editable install (which copies nothing).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROFILES = Path(__file__).resolve().parent / "profiles"
BUNDLED = Path("toolkit") / "bundled_profiles"  # toolkit.paths.BUNDLED_PROFILES


class BuildPyWithProfiles(build_py):
    """`build_py` that also copies profiles/**/*.yaml into the built `toolkit` package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        if not PROFILES.is_dir():
            raise FileNotFoundError(f"{PROFILES}: the bundled device profiles are missing")
        for path in sorted(PROFILES.rglob("*.y*ml")):
            target = Path(self.build_lib) / BUNDLED / path.relative_to(PROFILES)
            self.mkpath(str(target.parent))
            self.copy_file(str(path), str(target))


setup(cmdclass={"build_py": BuildPyWithProfiles})
