"""The core never pays for the image pipeline: no model library is imported by
``import semcodec``, by building the CLI (which registers encode/decode), or by running
``pack``/``unpack``. Checked in fresh interpreters, where ``sys.modules`` tells the truth.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_fixtures import cli

HEAVY = ("torch", "transformers", "diffusers", "openai", "accelerate", "huggingface_hub", "PIL", "ray", "pyarrow")


def heavy_modules_after(code: str, tmp_path: Path) -> list[str]:
    script = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import json, sys
        heavy = {HEAVY!r}
        print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=cli.clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def test_importing_semcodec_and_the_pipeline_loads_no_model_library(tmp_path: Path) -> None:
    code = """
        import semcodec, semcodec.pipeline, semcodec.pipeline.commands, semcodec.pipeline.backends, semcodec.cli
        import semcodec.pipeline.similarity
        import semcodec.data, semcodec.data.datasets, semcodec.data.jobs, semcodec.cli.datasets
        import semcodec.pipeline.backends.openai_api, semcodec.pipeline.backends.hf
        from semcodec.cli import build_parser
        parser = build_parser()
        for argv in (["encode", "--help"], ["decode", "--help"]):
            try:
                parser.parse_args(argv)
            except SystemExit:
                pass
    """
    assert heavy_modules_after(code, tmp_path) == []


def test_pack_and_unpack_on_the_command_line_load_no_model_library(tmp_path: Path) -> None:
    code = """
        import pathlib
        from semcodec.cli import main
        pathlib.Path("caption.txt").write_text("A red boat on a river.")
        assert main(["pack", "caption.txt", "-o", "caption.sem", "-q"]) == 0
        assert main(["unpack", "caption.sem", "-o", "back.txt"]) == 0
        assert pathlib.Path("back.txt").read_text().rstrip("\\n") == "A red boat on a river."
    """
    assert heavy_modules_after(code, tmp_path) == []
