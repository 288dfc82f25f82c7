"""example_workflows/run_example.py without ComfyUI: every mistake a user can make gives a message that says what
to do and an exit code other than 0, never a traceback. A small stdlib HTTP server stands in for ComfyUI where
the script needs one (its /object_info, /prompt and /history answers are the shapes ComfyUI 0.3.64 gives)."""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "example_workflows" / "run_example.py"


@pytest.fixture(scope="module")
def rx():
    spec = importlib.util.spec_from_file_location("run_example", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


class FakeComfy:
    """/object_info with a checkpoint list and the node types of the examples; /prompt records what it got."""

    def __init__(self, checkpoints, clip_vision=(), history_status="success"):
        self.checkpoints = list(checkpoints)
        self.clip_vision = list(clip_vision)
        self.prompts: list[dict] = []
        self.history_status = history_status
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/object_info":
                    return self._send(200, fake.object_info())
                if self.path.startswith("/history/"):
                    pid = self.path.rsplit("/", 1)[1]
                    msgs = [] if fake.history_status == "success" else [["execution_error", {
                        "node_id": "3", "node_type": "KSampler", "exception_type": "RuntimeError",
                        "exception_message": "boom"}]]
                    return self._send(200, {pid: {"status": {"completed": fake.history_status == "success",
                                                             "status_str": fake.history_status, "messages": msgs},
                                                  "outputs": {"9": {"text": ["hello from node 9"]}}}})
                self._send(404, {})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.prompts.append(body["prompt"])
                self._send(200, {"prompt_id": "p1", "number": 0, "node_errors": {}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def object_info(self):
        combo = {"required": {"ckpt_name": [self.checkpoints, {}]}}
        info = {"CheckpointLoaderSimple": {"input": combo},
                "CLIPVisionLoader": {"input": {"required": {"clip_name": [self.clip_vision, {}]}}}}
        for api in (ROOT / "example_workflows" / "api").glob("*.json"):
            for node in json.loads(api.read_text()).values():
                info.setdefault(node["class_type"], {"input": {"required": {}}})
        return info

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_list_names_every_example_with_its_title(rx, capsys):
    assert rx.main(["--list"]) == 0
    out = capsys.readouterr().out
    names = sorted(p.stem for p in (ROOT / "example_workflows" / "api").glob("*.json"))
    assert len(names) == 13 and [line.split()[0] for line in out.splitlines()] == names
    assert "Similarity trajectory: how each image settled during sampling" in out


def test_unknown_name_lists_the_known_ones(rx, capsys):
    assert rx.main(["no_such_example", "--server", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "unknown example 'no_such_example'" in err and "trajectory_similarity_chart" in err
    assert "Traceback" not in err


def test_old_name_still_works_and_says_the_new_one(rx, capsys):
    label, wf = rx.load_workflow("trajectory_ksampler")
    assert label == "trajectory_similarity_chart.json" and any(n["class_type"] == "SentinelKSamplerTrajectory"
                                                               for n in wf.values())
    assert "now called 'trajectory_similarity_chart'" in capsys.readouterr().err


def test_ui_file_given_by_mistake_points_at_its_api_twin(rx, capsys):
    ui = ROOT / "example_workflows" / "trajectory_similarity_chart.json"
    assert rx.main([str(ui), "--server", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "is a UI-format workflow" in err and "api/trajectory_similarity_chart.json" in err
    assert "Export (API)" in err and "Traceback" not in err


def test_missing_file_and_bad_json(rx, tmp_path, capsys):
    assert rx.main([str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert rx.main([str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    other = tmp_path / "list.json"
    other.write_text("[1, 2]")
    assert rx.main([str(other)]) == 2
    assert "not an API-format workflow" in capsys.readouterr().err


def test_unreachable_server(rx, capsys):
    url = f"http://127.0.0.1:{_closed_port()}"
    assert rx.main(["trajectory_similarity_chart", "--server", url]) == 4
    err = capsys.readouterr().err
    assert f"no ComfyUI answers at {url}" in err and "--server" in err and "Traceback" not in err


def test_bad_set_arguments(rx, capsys):
    assert rx.main(["trajectory_similarity_chart", "--set", "3.seed"]) == 2
    assert "expected NODE.INPUT=VALUE" in capsys.readouterr().err
    assert rx.main(["trajectory_similarity_chart", "--set", "99.seed=1"]) == 2
    err = capsys.readouterr().err
    assert "no node '99'" in err and "3 (SentinelKSamplerTrajectory)" in err


def test_no_checkpoint_on_the_server(rx, capsys):
    with FakeComfy(checkpoints=[]) as fake:
        assert rx.main(["trajectory_similarity_chart", "--server", fake.url]) == 2
    err = capsys.readouterr().err
    assert "lists no checkpoint" in err and "models/checkpoints" in err
    assert fake.prompts == []  # nothing was queued


def test_unknown_ckpt_option_lists_the_servers_checkpoints(rx, capsys):
    with FakeComfy(checkpoints=["a.safetensors", "b.safetensors"]) as fake:
        assert rx.main(["trajectory_similarity_chart", "--server", fake.url, "--ckpt", "c.safetensors"]) == 2
    err = capsys.readouterr().err
    assert "--ckpt 'c.safetensors' is not in the server's models/checkpoints" in err
    assert "a.safetensors, b.safetensors" in err


def test_checkpoint_fallback_set_and_run(rx, capsys):
    """The example's checkpoint is absent: the server's first is used (with a note); --set and --seed apply."""
    with FakeComfy(checkpoints=["mine.safetensors"]) as fake:
        rc = rx.main(["trajectory_similarity_chart", "--server", fake.url, "--set", "3.steps=5",
                      "--set", "9.filename_prefix=x/y", "--seed", "11"])
        assert rc == 0
        (wf,) = fake.prompts
    captured = capsys.readouterr()
    assert "using 'mine.safetensors'" in captured.err
    assert wf["4"]["inputs"]["ckpt_name"] == "mine.safetensors"
    assert wf["3"]["inputs"]["steps"] == 5 and wf["3"]["inputs"]["seed"] == 11
    assert wf["9"]["inputs"]["filename_prefix"] == "x/y"
    assert "[9] SaveImage: hello from node 9" in captured.out


def test_the_examples_own_checkpoint_is_kept_when_the_server_has_it(rx):
    with FakeComfy(checkpoints=["other.safetensors", "v1-5-pruned-emaonly.safetensors"]) as fake:
        assert rx.main(["artifact_predict_keep_best", "--server", fake.url]) == 0
        assert fake.prompts[0]["4"]["inputs"]["ckpt_name"] == "v1-5-pruned-emaonly.safetensors"


def test_missing_model_file_names_the_node_and_the_fix(rx, capsys):
    with FakeComfy(checkpoints=["v1-5-pruned-emaonly.safetensors"], clip_vision=["other_clip.safetensors"]) as fake:
        assert rx.main(["diversity_select_diverse_subset", "--server", fake.url]) == 2
        assert fake.prompts == []
    err = capsys.readouterr().err
    assert "(CLIPVisionLoader).clip_name = 'clip-vit-large-patch14.safetensors' is not available" in err
    assert "other_clip.safetensors" in err and "--set 10.clip_name=NAME" in err


def test_a_failing_node_is_reported_with_exit_code_1(rx, capsys):
    with FakeComfy(checkpoints=["v1-5-pruned-emaonly.safetensors"], history_status="error") as fake:
        assert rx.main(["trajectory_similarity_chart", "--server", fake.url]) == 1
    assert "node 3 (KSampler) failed: RuntimeError: boom" in capsys.readouterr().err
