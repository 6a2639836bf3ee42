"""The README's walkthrough (between <!-- walkthrough:begin --> and <!-- walkthrough:end -->), its
bash blocks run verbatim, with the tiny model standing in for a real checkpoint: like one, its directory
holds Qwen2.5-VL's tokenizer and processor files (`autoquant model init` writes them), $IMAGES a few
captioned images."""
import os
import re
import shutil
import subprocess
import sys

from aq_paths import BUILD_DIR, REPO
from daemon_helpers import free_port
from test_calib_from_images import image_folder, tiny_model  # noqa: F401 (fixtures)


def walkthrough_script() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("<!-- walkthrough:begin -->", 1)[1].split("<!-- walkthrough:end -->", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 4, "the README's walkthrough lost its bash blocks"
    return "\n".join(blocks)


def test_readme_walkthrough_runs_verbatim(tmp_path, tiny_model, image_folder):  # noqa: F811
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    work = tmp_path / "work"
    venv_bin = os.path.dirname(sys.executable)  # where setup.sh installed autoquant-calib
    env = dict(os.environ, MODEL=str(model), IMAGES=str(image_folder), WORK=str(work), PORT=str(free_port()),
               METRICS_PORT=str(free_port()),
               PATH=os.pathsep.join([str(BUILD_DIR / "bin"), venv_bin, os.environ["PATH"]]))
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough_script()], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "OK: every scheme is distinct and matches its manifest" in p.stdout
    for c in range(10, 101, 10):
        assert (work / "models" / f"top{c}" / "config.json").exists()
    assert "stopped cleanly" in (work / "autoquantd.log").read_text()
