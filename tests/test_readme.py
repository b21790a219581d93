"""Every ```python block of README.md runs as pasted, on the shipped models, from a fresh folder (the README's
relative weights/ paths point at the repository's). A block that calls the app's API gets an app served first,
at the address the block names."""

import re
import socket
from pathlib import Path

import pytest
import torch

from ui_helpers import gradio_env  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs_as_pasted(index, tmp_path, monkeypatch):
    code = BLOCKS[index]
    (tmp_path / "weights").symlink_to(ROOT / "weights")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a busy 2-core box: one thread is as fast and does not starve the others
    demo = None
    try:
        if "gradio_client" in code:
            from genkit.loading import load_pipeline
            from genkit.ui import build_demo

            url = re.search(r'Client\("(http://127\.0\.0\.1:(\d+)/)"\)', code)
            if not port_free(int(url.group(2))):
                pytest.skip(f"port {url.group(2)} is in use here (is `python app.py` running?)")
            demo = build_demo(load_pipeline(str(ROOT / "weights/openmoji-32")), model_name="openmoji-32")
            demo.launch(prevent_thread_lock=True, server_port=int(url.group(2)), quiet=True)
        exec(compile(code, f"README.md block {index}", "exec"), {"__name__": "__readme__"})
    finally:
        torch.set_num_threads(threads)
        if demo is not None:
            demo.close()
