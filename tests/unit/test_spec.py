"""The job spec: loading, each kind of problem (with its line), profiles, --set, digest, schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from launcher.errors import SpecError, SpecProblem
from launcher.gpus import expand_gpu, resolve_gpu, suggest_gpu
from launcher.spec import JobSpec, json_schema, load_spec, validate_files
from launcher.targets.colab.options import ColabOptions
from launcher.targets.kaggle.options import KaggleOptions
from launcher.targets.local.options import LocalOptions
from launcher.targets.vast.options import VastOptions

SPECS = Path(__file__).parent / "specs"
BAD = SPECS / "bad"
REPO = Path(__file__).resolve().parents[2]


def problems_of(path: Path, **kwargs: Any) -> list[SpecProblem]:
    with pytest.raises(SpecError) as info:
        load_spec(path, **kwargs)
    return info.value.problems


def _workload(folder: Path) -> None:
    """A workload folder with something in it (an empty one is a problem of its own)."""
    folder.mkdir(parents=True)
    (folder / "train.py").write_text("print('training')\n")


def one_problem(path: Path, **kwargs: Any) -> SpecProblem:
    problems = problems_of(path, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


# ---- good specs -------------------------------------------------------------------------------


def test_full_spec_reads_back() -> None:
    spec = load_spec(SPECS / "good.yaml")
    assert spec.name == "demo"
    assert spec.image == "demo"
    assert spec.run == "python -m demo.train --epochs 5"
    gpu = spec.resources.gpu
    assert gpu.count == 1
    assert gpu.types == ["RTX_4090", "A100_PCIE", "A100_SXM4", "A100X", "T4"]
    assert gpu.min_vram_gb == 16
    assert (spec.resources.cpus, spec.resources.memory_gb, spec.resources.disk_gb) == (4, 16, 50)
    assert [(i.kaggle, i.path, i.name) for i in spec.inputs] == [
        ("owner/rwf-2000", None, "rwf2000"),
        (None, "data/frames", "frames"),
    ]
    assert spec.outputs.sync_every == 5400.0
    assert spec.env == {"TF_CPP_MIN_LOG_LEVEL": "2"}
    assert spec.secrets == ["HF_TOKEN"]
    assert (spec.limits.max_hours, spec.limits.max_cost_usd, spec.limits.grace_seconds) == (
        12,
        5,
        45,
    )
    assert spec.targets.for_target("local") == LocalOptions(runtime="docker", gpus="all")
    vast = spec.targets.for_target("vast")
    assert (vast.max_dph, vast.min_reliability, vast.interruptible) == (0.8, 0.98, True)
    assert (vast.min_inet_down_mbps, vast.min_cuda) == (100, "12.1")
    kaggle = spec.targets.for_target("kaggle")
    assert (kaggle.accelerator, kaggle.internet, kaggle.allow_chaining) == (
        "NvidiaTeslaT4",
        False,
        True,
    )
    assert spec.targets.for_target("colab").gpu == "L4"
    assert spec.source_path == (SPECS / "good.yaml").resolve()
    assert spec.project_root == SPECS.resolve()
    assert spec.workload_path == SPECS.resolve() / "workloads" / "demo"
    assert spec.image_dir == SPECS.resolve() / "images" / "demo"


def test_minimal_spec_gets_defaults() -> None:
    spec = load_spec(SPECS / "minimal.yaml")
    assert spec.image is None and spec.image_dir is None
    assert spec.workload == "workloads/demo"  # workloads/<name>
    assert spec.resources.gpu.count == 0 and spec.resources.gpu.types == []
    assert spec.resources.disk_gb == 20
    assert spec.outputs.sync_every == 300.0
    assert spec.limits.grace_seconds == 30 and spec.limits.max_hours is None
    assert spec.inputs == [] and spec.env == {} and spec.secrets == []
    assert spec.targets.for_target("local") == LocalOptions()
    assert spec.targets.for_target("vast") == VastOptions()
    assert spec.targets.for_target("kaggle") == KaggleOptions()
    assert spec.targets.for_target("colab") == ColabOptions()
    with pytest.raises(KeyError):
        spec.targets.for_target("nowhere")


def test_resolved_dict_round_trips_without_profiles() -> None:
    spec = load_spec(SPECS / "good.yaml")
    data = spec.resolved_dict()
    assert "profiles" not in data
    assert data["inputs"][0]["as"] == "rwf2000"
    assert data["outputs"]["sync_every"] == 5400.0
    json.dumps(data)  # plain JSON
    again = JobSpec.model_validate(data)
    assert again.resolved_dict() == data


def test_empty_sections_mean_defaults(tmp_path: Path) -> None:
    _workload(tmp_path / "workloads" / "demo")
    path = tmp_path / "demo.yaml"
    path.write_text("name: demo\nrun: x\nresources:\ntargets:\nenv:\n")
    spec = load_spec(path)
    assert spec.resources.disk_gb == 20 and spec.env == {}


# ---- one problem of each kind, with its line and suggestion -----------------------------------


@pytest.mark.parametrize(
    ("file", "line", "key", "words", "suggestion"),
    [
        ("typo_top.yaml", 3, "resurces", "unknown key", "resources"),
        ("typo_nested.yaml", 5, "resources.gpu.cout", "unknown key", "count"),
        (
            "unknown_gpu.yaml",
            8,
            "resources.gpu.types.1",
            "unknown GPU type 'RTX4090X'",
            "RTX_4090",
        ),
        ("duration.yaml", 4, "outputs.sync_every", "expected a duration", None),
        ("env_int.yaml", 5, "env.TF_CPP_MIN_LOG_LEVEL", 'quote it: "2"', None),
        ("secret_lower.yaml", 3, "secrets.0", "UPPER_SNAKE", "HF_TOKEN"),
        ("unknown_target.yaml", 5, "targets.vasst", "unknown key", "vast"),
        ("kaggle_typo.yaml", 5, "targets.kaggle.accelerator", "NvidiaTesla4", "NvidiaTeslaT4"),
        ("syntax.yaml", 4, "", "YAML syntax", None),
        ("duplicate.yaml", 5, "limits.max_hours", "duplicate key (first at line 4)", None),
        ("not_mapping.yaml", 1, "", "a job spec is a mapping", None),
        ("no_workload.yaml", 3, "workload", "workloads/nope not found", None),
    ],
)
def test_problem_points_at_line(
    file: str, line: int, key: str, words: str, suggestion: str | None
) -> None:
    problem = one_problem(BAD / file)
    assert problem.file == str(BAD / file)
    assert (problem.line, problem.key, problem.suggestion) == (line, key, suggestion)
    assert words in problem.message
    assert "Input should" not in problem.message  # our words, not pydantic's


def test_missing_keys_point_at_the_mapping() -> None:
    problems = problems_of(BAD / "missing.yaml")
    assert [(p.line, p.key, p.message) for p in problems] == [
        (2, "name", "required key is missing"),
        (2, "run", "required key is missing"),
    ]


def test_all_problems_reported_at_once() -> None:
    problems = problems_of(BAD / "many.yaml")
    got = [(p.line, p.key, p.suggestion) for p in problems]
    assert got == [
        (1, "name", "demo-job"),
        (4, "resources.gpu.count", None),
        (4, "resources.gpu.types.0", "RTX_4090"),
        (5, "resources.disk_gb", None),
        (6, "outputs.sync_every", None),
        (7, "env.SEED", None),
        (8, "secrets.0", "HF_TOKEN"),
        (10, "targets.vasst", "vast"),
        (11, "targets.kaggle.accelerator", "NvidiaTeslaT4"),
    ]
    assert problems[1].message == "must be at most 16, got 17"
    assert problems[3].message == "expected a number, got 'lots'"


def test_spec_error_renders_every_problem() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(BAD / "many.yaml")
    text = info.value.render()
    assert text.startswith("9 problems in the job spec:")
    assert f"{BAD / 'many.yaml'}:10: targets.vasst: unknown key in targets" in text
    assert "(did you mean 'vast'?)" in text
    assert "Traceback" not in text


def test_missing_file_is_a_problem() -> None:
    problem = one_problem(SPECS / "nope.yaml")
    assert problem.message == "file not found"


def test_gpu_smaller_than_min_vram(tmp_path: Path) -> None:
    _workload(tmp_path / "workloads" / "demo")
    path = tmp_path / "demo.yaml"
    path.write_text(
        "name: demo\nrun: x\nresources:\n  gpu:\n    types: [T4]\n    min_vram_gb: 24\n"
    )
    problem = one_problem(path)
    assert (problem.line, problem.key) == (4, "resources.gpu")
    assert problem.message == "T4 has 16 GB: less than min_vram_gb 24"


def test_input_needs_exactly_one_source(tmp_path: Path) -> None:
    _workload(tmp_path / "workloads" / "demo")
    path = tmp_path / "demo.yaml"
    path.write_text("name: demo\nrun: x\ninputs:\n  - {as: a}\n  - {path: a/b, as: a}\n")
    problems = problems_of(path)
    assert [(p.line, p.key) for p in problems] == [(4, "inputs.0")]
    assert "exactly one of" in problems[0].message


# ---- profiles ---------------------------------------------------------------------------------


def test_profile_deep_merges() -> None:
    base = load_spec(SPECS / "good.yaml")
    smoke = load_spec(SPECS / "good.yaml", profile="smoke")
    assert smoke.run == "python -m demo.train --epochs 2"
    assert smoke.limits.max_hours == 0.1
    assert smoke.limits.max_cost_usd == 5  # merged, not replaced
    assert smoke.resources.gpu.types == ["T4"]  # lists replace
    assert smoke.resources.gpu.count == 1 and smoke.resources.disk_gb == 50
    assert smoke.digest() != base.digest()


def test_unknown_profile_did_you_mean() -> None:
    problem = one_problem(SPECS / "good.yaml", profile="smok")
    assert (problem.line, problem.key, problem.suggestion) == (23, "profiles", "smoke")
    assert problem.message.startswith("unknown profile 'smok'")


def test_problem_from_profile_points_into_the_profile() -> None:
    problem = one_problem(BAD / "in_profile.yaml", profile="fast")
    assert (problem.line, problem.key) == (5, "profiles.fast.limits.max_hours")
    assert problem.message == "expected a number, got 'soon'"
    load_spec(BAD / "in_profile.yaml")  # the profile is only applied when asked for


def test_validate_files_checks_every_profile() -> None:
    problems = validate_files([BAD / "in_profile.yaml"])
    assert [(p.line, p.key) for p in problems] == [(5, "profiles.fast.limits.max_hours")]


# ---- --set overrides ----------------------------------------------------------------------------


def test_set_scalar_list_and_nested() -> None:
    spec = load_spec(
        SPECS / "good.yaml",
        overrides=[
            "resources.gpu.count=2",
            "resources.gpu.types=[T4, rtx-3090]",
            "env.FOO=bar",
            "env.SEED=1",
            "targets.vast.max_dph=0.5",
            "inputs.0.as=videos",
            "outputs.sync_every=30s",
        ],
    )
    assert spec.resources.gpu.count == 2
    assert spec.resources.gpu.types == ["T4", "RTX_3090"]
    assert spec.env == {"TF_CPP_MIN_LOG_LEVEL": "2", "FOO": "bar", "SEED": "1"}
    assert spec.targets.for_target("vast").max_dph == 0.5
    assert spec.inputs[0].name == "videos"
    assert spec.outputs.sync_every == 30.0


def test_set_applies_after_the_profile() -> None:
    spec = load_spec(SPECS / "good.yaml", profile="smoke", overrides=["limits.max_hours=2"])
    assert spec.limits.max_hours == 2 and spec.run.endswith("--epochs 2")


def test_set_creates_missing_sections() -> None:
    spec = load_spec(SPECS / "minimal.yaml", overrides=["targets.kaggle.internet=false"])
    assert spec.targets.for_target("kaggle").internet is False


def test_bad_set_paths() -> None:
    problems = problems_of(
        SPECS / "good.yaml",
        overrides=[
            "run.x=1",
            "novalue",
            "inputs.7.as=x",
            "resurces.gpu.count=2",
            "limits.max_hours=x",
        ],
    )
    assert all(p.file == "--set" and p.line is None for p in problems), problems
    got = {p.key: (p.message, p.suggestion) for p in problems}
    assert got["run.x"][0].startswith("'run' is ")
    assert got["novalue"][0] == "expected key.path=value, got 'novalue'"
    assert got["inputs.7.as"][0] == "'inputs' has no item 7"
    assert got["resurces"] == ("unknown key", "resources")
    assert got["limits.max_hours"] == ("expected a number, got 'x'", None)


# ---- digest and schema ------------------------------------------------------------------------


def _project(tmp_path: Path) -> Path:
    _workload(tmp_path / "workloads" / "demo")
    return tmp_path


def test_digest_ignores_key_order_and_sees_values(tmp_path: Path) -> None:
    root = _project(tmp_path)
    a, b, c = root / "a.yaml", root / "b.yaml", root / "c.yaml"
    a.write_text("name: demo\nrun: x\nenv: {A: '1', B: '2'}\nlimits: {max_hours: 1}\n")
    b.write_text("limits: {max_hours: 1}\nenv: {B: '2', A: '1'}\nrun: x\nname: demo\n")
    c.write_text("name: demo\nrun: x\nenv: {A: '1', B: '3'}\nlimits: {max_hours: 1}\n")
    assert load_spec(a).digest() == load_spec(b).digest()
    assert load_spec(a).digest() != load_spec(c).digest()
    assert len(load_spec(a).digest()) == 64


def test_digest_ignores_profiles(tmp_path: Path) -> None:
    root = _project(tmp_path)
    a, b = root / "a.yaml", root / "b.yaml"
    a.write_text("name: demo\nrun: x\n")
    b.write_text("name: demo\nrun: x\nprofiles: {smoke: {run: y}}\n")
    assert load_spec(a).digest() == load_spec(b).digest()


def _objects(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if "properties" in node:
            found.append(node)  # pyright: ignore[reportUnknownArgumentType]
        for value in node.values():  # pyright: ignore[reportUnknownVariableType]
            found += _objects(value)
    elif isinstance(node, list):
        for value in node:  # pyright: ignore[reportUnknownVariableType]
            found += _objects(value)
    return found


def test_schema_documents_fields_and_forbids_extra_keys() -> None:
    schema = json_schema()
    json.dumps(schema)
    assert set(schema["required"]) == {"name", "run"}
    objects = _objects(schema)
    assert len(objects) >= 10  # JobSpec, the sections, the four target options
    for obj in objects:
        assert obj["additionalProperties"] is False, obj.get("title")
        for name, prop in obj["properties"].items():
            assert prop.get("description"), f"{obj.get('title')}.{name} has no description"
    props = schema["properties"]
    assert "source_path" not in props and "project_root" not in props
    assert props["targets"]["$ref"].endswith("/TargetsSpec")
    assert set(schema["$defs"]["TargetsSpec"]["properties"]) == {
        "local",
        "vast",
        "kaggle",
        "colab",
    }


# ---- GPU names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["RTX_4090", "rtx 4090", "RTX-4090", "4090", "NVIDIA GeForce RTX 4090"]
)
def test_gpu_spellings(name: str) -> None:
    assert resolve_gpu(name) == "RTX_4090"


def test_gpu_families_and_suggestions() -> None:
    assert resolve_gpu("Tesla T4") == "T4"
    assert expand_gpu("a100") == ("A100_PCIE", "A100_SXM4", "A100X")
    assert resolve_gpu("RTX4090X") is None
    assert suggest_gpu("RTX4090X") == "RTX_4090"
    assert suggest_gpu("zzz") is None


# ---- the repository's own job specs -------------------------------------------------------------


def test_every_job_spec_in_the_repo_is_valid() -> None:
    specs = sorted((REPO / "jobs").glob("*.yaml"))
    if not specs:
        pytest.fail(f"jobs/ has no specs ({REPO / 'jobs'} holds no *.yaml)", pytrace=False)
    problems = validate_files(specs)
    assert not problems, "\n".join(p.render() for p in problems)


def test_validate_files_on_a_folder(tmp_path: Path) -> None:
    shutil.copy(SPECS / "good.yaml", tmp_path / "good.yaml")
    _workload(tmp_path / "workloads" / "demo")
    (tmp_path / "images" / "demo").mkdir(parents=True)
    assert validate_files([tmp_path]) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    [problem] = validate_files([empty])
    assert "no job specs" in problem.message


# ---- the workload folder ------------------------------------------------------------------------


def _project_with(tmp_path: Path, workload: str) -> Path:
    proj = tmp_path / "proj"
    (proj / "workloads" / "mine").mkdir(parents=True)
    (proj / "workloads" / "mine" / "train.py").write_text("print('hi')\n")
    (proj / "jobs").mkdir()
    spec = proj / "jobs" / "job.yaml"
    spec.write_text(f"name: job\nrun: python3 train.py\nworkload: {workload}\n")
    return spec


def test_a_workload_outside_the_project_is_refused_unless_asked_for(tmp_path: Path) -> None:
    """A spec from a cloned repository must not ship files from elsewhere on this machine."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "id_rsa.pub").write_text("not for upload\n")
    for workload in ("../elsewhere", str(tmp_path / "elsewhere")):
        spec = _project_with(tmp_path, workload)
        problem = one_problem(spec)
        assert (problem.key, problem.line) == ("workload", 3)
        assert (
            "outside the project" in problem.message
            and "--allow-outside-workload" in problem.message
        )
        assert (
            load_spec(spec, allow_outside=True).workload_path.resolve() == tmp_path / "elsewhere"
        )
        shutil.rmtree(tmp_path / "proj")
    assert load_spec(_project_with(tmp_path, "workloads/mine")).workload == "workloads/mine"


def test_an_empty_workload_folder_is_a_problem_not_an_empty_bundle(tmp_path: Path) -> None:
    spec = _project_with(tmp_path, "workloads/empty")
    (spec.parents[1] / "workloads" / "empty" / "sub").mkdir(parents=True)
    problem = one_problem(spec)
    assert problem.key == "workload" and "holds no files" in problem.message
