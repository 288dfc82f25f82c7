"""The example workflows without a server: the file layout the template browser sees, and the rules by which
tests/_workflows.py turns an API twin into the UI workflow the editor opens (checked against the frontend bundles
1.27.10 and 1.58.1; the integration test test_editor.py checks the result in both frontends)."""

from __future__ import annotations

import json

import _workflows as W
import pytest

INT = ["INT", {"default": 0, "min": 0, "max": 100}]


def _info(required=(), optional=(), outputs=("FLOAT",), name="Test"):
    req, opt = dict(required), dict(optional)
    return {"input": {"required": req, "optional": opt, "hidden": {"prompt": "PROMPT"}},
            "input_order": {"required": list(req), "optional": list(opt), "hidden": ["prompt"]},
            "output": list(outputs), "output_name": list(outputs), "output_is_list": [False] * len(outputs),
            "display_name": name, "category": "test"}


def _ui(api, info_by_type):
    return {str(n["id"]): n for n in W.api_to_ui(api, info_by_type)["nodes"]}


# ------------------------------------------------------------------------------------------------ file layout


def test_top_level_holds_only_ui_workflows_thumbnails_and_the_runner():
    names = W.template_names()
    assert len(names) == 13
    files = {p.name for p in W.EXAMPLES.iterdir()}
    expected = {f"{n}.json" for n in names} | {f"{n}.jpg" for n in names} | {"api", "run_example.py"}
    assert files - {"__pycache__"} == expected
    assert not any(n.endswith("_api") for n in names)


@pytest.mark.parametrize("name", W.template_names())
def test_each_template_has_an_api_twin_a_ui_file_a_note_and_a_small_thumbnail(name):
    api = W.load_api(name)
    assert all(set(n) <= {"class_type", "inputs", "_meta"} for n in api.values())
    ui = json.loads(W.ui_path(name).read_text())
    assert ui["version"] == 0.4 and isinstance(ui["nodes"], list) and isinstance(ui["links"], list)
    # every API node is in the UI file, plus one Markdown note whose text is the note file's
    assert {str(n["id"]) for n in ui["nodes"] if n["type"] != "MarkdownNote"} == set(api)
    (note,) = [n for n in ui["nodes"] if n["type"] == "MarkdownNote"]
    title, text = W.read_note(name)
    assert note["title"] == title and note["widgets_values"] == [text] and len(text) > 200
    assert "**What to change.**" in text and "**Where results appear.**" in text
    # the checkpoint name a user has, never a test file
    assert [n["inputs"]["ckpt_name"] for n in api.values() if "ckpt_name" in n["inputs"]] == [W.CHECKPOINT]
    assert "sd15-tiny" not in W.api_path(name).read_text() + W.ui_path(name).read_text()
    jpg = W.thumb_path(name).read_bytes()
    assert jpg[:2] == b"\xff\xd8" and 5_000 < len(jpg) < 100_000
    from PIL import Image

    assert Image.open(W.thumb_path(name)).size == (512, 512)


@pytest.mark.parametrize("name", W.template_names())
def test_links_point_at_the_sockets_they_fill(name):
    ui = json.loads(W.ui_path(name).read_text())
    nodes = {n["id"]: n for n in ui["nodes"]}
    for lid, src, src_slot, dst, dst_slot, typ in ui["links"]:
        assert nodes[dst]["inputs"][dst_slot]["link"] == lid
        assert lid in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[src]["outputs"][src_slot]["type"] == typ
    api = W.load_api(name)
    n_links = sum(1 for n in api.values() for v in n["inputs"].values() if W._is_link(v))
    assert len(ui["links"]) == n_links == ui["last_link_id"]


# ------------------------------------------------------------------------------------------------ widget rules


def test_legacy_seed_rule_adds_a_control_value_after_int_seed_and_noise_seed():
    """The frontend adds a value-control widget after an INT named seed/noise_seed unless the input says
    control_after_generate: false; saved values must leave a slot for it (the bug that broke three templates)."""
    info = _info(required=[("seed", INT), ("n_samples", INT), ("noise_seed", INT),
                           ("steps", ["INT", {"default": 1, "control_after_generate": True}]),
                           ("fixed_seed", ["INT", {"default": 5, "control_after_generate": False}]),
                           ("seed_f", ["FLOAT", {"default": 0.5}])])
    info["input"]["required"]["plain_seed"] = ["INT", {"control_after_generate": False}]
    info["input_order"]["required"].insert(0, "plain_seed")
    info["input"]["required"]["seed2"] = ["INT", {}]
    info["input_order"]["required"].append("seed2")
    api = {"1": {"class_type": "T", "inputs": {"plain_seed": 9, "seed": 51, "n_samples": 1, "noise_seed": 3,
                                              "steps": 4, "fixed_seed": 6, "seed_f": 0.25, "seed2": 8}}}
    node = _ui(api, {"T": info})["1"]
    assert node["widgets_values"] == [9, 51, "fixed", 1, 3, "fixed", 4, "fixed", 6, 0.25, 8]
    # an input named seed with control_after_generate false gets none, as in frontend 1.27.10 and 1.58.1
    info["input"]["required"]["seed"] = ["INT", {"default": 0, "control_after_generate": False}]
    assert _ui(api, {"T": info})["1"]["widgets_values"][:3] == [9, 51, 1]


def test_sampler_seeds_are_saved_randomize_measurement_seeds_fixed():
    sampler = _info(required=[("seed", INT)], outputs=("LATENT",))
    noise = _info(required=[("noise_seed", INT)], outputs=("NOISE",))
    mode = _info(required=[("seed", ["INT", {"control_after_generate": "increment"}])])
    api = {"1": {"class_type": "S", "inputs": {"seed": 1}}, "2": {"class_type": "N", "inputs": {"noise_seed": 2}},
           "3": {"class_type": "M", "inputs": {"seed": 3}}}
    ui = _ui(api, {"S": sampler, "N": noise, "M": mode})
    assert ui["1"]["widgets_values"] == [1, "randomize"]
    assert ui["2"]["widgets_values"] == [2, "randomize"]
    assert ui["3"]["widgets_values"] == [3, "increment"]  # a mode given by the schema (frontend 1.58.1)


def test_combo_with_control_gets_a_mode_and_a_filter_list():
    info = _info(required=[("pick", [["a", "b"], {"control_after_generate": True}]), ("other", [["x", "y"]])])
    node = _ui({"1": {"class_type": "T", "inputs": {"pick": "b", "other": "y"}}}, {"T": info})["1"]
    assert node["widgets_values"] == ["b", "fixed", "", "y"]


def test_sockets_first_then_one_widget_socket_per_widget_force_input_is_a_socket():
    info = _info(required=[("mode", ["COMBO", {"options": ["m1", "m2"], "default": "m2"}]),
                           ("p", ["FLOAT", {"forceInput": True}]), ("model", ["MODEL", {}]),
                           ("k", ["INT", {"default": 4}])],
                 optional=[("vae", ["VAE", {}]), ("text", ["STRING", {"multiline": True, "default": "hi"}])])
    src = _info(outputs=("FLOAT", "MODEL", "INT"))
    api = {"1": {"class_type": "Src", "inputs": {}},
           "2": {"class_type": "T", "inputs": {"p": ["1", 0], "model": ["1", 1], "k": ["1", 2]}}}
    ui = _ui(api, {"T": info, "Src": src})
    node = ui["2"]
    assert [i["name"] for i in node["inputs"]] == ["p", "model", "vae", "mode", "k", "text"]
    assert [i.get("widget") for i in node["inputs"]] == [None, None, None, {"name": "mode"}, {"name": "k"},
                                                         {"name": "text"}]
    # missing widgets get the editor's defaults (V3 combo default, multiline default); a linked widget keeps its
    # default value and the link fills its widget socket
    assert node["widgets_values"] == ["m2", 4, "hi"]
    links = W.api_to_ui(api, {"T": info, "Src": src})["links"]
    assert [ln[1:5] for ln in links] == [[1, 0, 2, 0], [1, 1, 2, 1], [1, 2, 2, 4]]
    assert node["inputs"][4]["link"] == 3 and node["inputs"][2]["link"] is None


def test_normalise_adds_missing_widget_defaults_and_drops_unknown_inputs():
    info = _info(required=[("a", INT)], optional=[("b", [["x", "y"]]), ("c", ["IMAGE", {}])])
    api, changes = W.normalise_api({"1": {"class_type": "T", "inputs": {"a": 2, "gone": 1}}}, {"T": info})
    assert api["1"]["inputs"] == {"a": 2, "b": "x"}
    assert len(changes) == 2 and "dropped input 'gone'" in changes[0] and "added b='x'" in changes[1]
    with pytest.raises(KeyError, match="not in /object_info"):
        W.normalise_api({"1": {"class_type": "Nope", "inputs": {}}}, {"T": info})


def test_titles_come_from_meta_and_layout_does_not_overlap():
    info = _info(required=[("x", ["IMAGE", {}]), ("s", INT)], outputs=("IMAGE",), name="Thing")
    api = {"1": {"class_type": "T", "inputs": {"s": 1}, "_meta": {"title": "First"}},
           "2": {"class_type": "T", "inputs": {"x": ["1", 0], "s": 2}, "_meta": {"title": "Thing"}},
           "3": {"class_type": "T", "inputs": {"x": ["1", 0], "s": 3}}}
    wf = W.api_to_ui(api, {"T": info}, note=("About", "some text " * 40))
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert nodes[1]["title"] == "First" and "title" not in nodes[2] and nodes[4]["title"] == "About"
    boxes = {str(i): [n["pos"][0], n["pos"][1] - W.TITLE, n["size"][0], n["size"][1] + W.TITLE]
             for i, n in nodes.items()}
    assert not W.boxes_overlap(boxes)
    assert nodes[2]["pos"][0] > nodes[1]["pos"][0] > nodes[4]["pos"][0]  # note, then by depth
    assert W.boxes_overlap({"a": [0, 0, 10, 10], "b": [5, 5, 10, 10]}) and not W.boxes_overlap(
        {"a": [0, 0, 10, 10], "b": [10, 0, 10, 10]})


def test_prompt_difference_reports_values_missing_nodes_titles_and_ignores_frontend_only_inputs():
    info = {"PreviewAny": _info(required=[("source", ["*", {}])]), "T": _info(required=[("s", INT)])}
    want = {"1": {"class_type": "T", "inputs": {"s": 1}, "_meta": {"title": "Mine"}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    got = {"1": {"class_type": "T", "inputs": {"s": 1}, "_meta": {"title": "Mine"}},
           "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0], "preview": ""}}}
    assert W.prompt_difference(got, want, info) == []
    assert W.prompt_difference(got, want) == ["node 2 (PreviewAny).preview: editor sends '', the twin has none"]
    got["1"]["inputs"]["s"] = 2
    got["1"]["_meta"]["title"] = "T"
    del got["2"]
    assert W.prompt_difference(got, want, info) == [
        "node 1 (T).s: editor 2 != twin 1", "node 1: title 'T' != 'Mine'",
        "node 2 (PreviewAny) is missing from the editor's prompt"]


def test_shrink_for_cpu_edits_sizes_and_sampler_steps_only():
    api = W.load_api("memorization_guard_report")
    edits = W.shrink_for_cpu(api)
    assert edits["5"] == {"width": 64, "height": 64} and edits["8"] == {"width": 64, "height": 64}
    assert edits["3"] == {"steps": 3} and "10" not in edits and "12" not in edits  # Wen/Volume steps untouched
    shrunk = W.apply_edits(api, edits)
    assert shrunk["3"]["inputs"]["steps"] == 3 and api["3"]["inputs"]["steps"] == 8


def test_a_node_that_frontend_1_27_would_remap_on_load_is_refused():
    """1.27.10's migrateWidgetsValues counts a forceInput input as one value and a combo with a control widget as
    two (it saves three): with both, the counts match and it would drop a value on load, so refuse to generate."""
    info = _info(required=[("p", ["FLOAT", {"forceInput": True}]),
                           ("pick", [["a", "b"], {"control_after_generate": True}])])
    with pytest.raises(ValueError, match="re-map"):
        W.api_to_ui({"1": {"class_type": "T", "inputs": {"pick": "a"}}}, {"T": info})
    # forceInput next to seeds (with or without a control widget) can never match: nothing to refuse
    info = _info(required=[("p", ["FLOAT", {"forceInput": True}]), ("seed", INT),
                           ("seed2", ["INT", {"control_after_generate": False}])])
    assert _ui({"1": {"class_type": "T", "inputs": {"seed": 3, "seed2": 4}}}, {"T": info})["1"]["widgets_values"] \
        == [3, "fixed", 4]
