"""The job spec: pydantic models, loading (profiles, --set overrides), problems, JSON Schema.

    load_spec(path, profile=..., overrides=[...]) -> JobSpec     raises SpecError (all problems)
    validate_files(paths) -> list[SpecProblem]                     never raises for bad content
    json_schema() -> dict                                          JobSpec.model_json_schema()

Order of application: document -> profile (deep merge: mappings merge, lists and scalars
replace) -> `--set key.path=value` overrides -> validation -> folder checks.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, cast, overload

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from launcher.errors import SpecError, SpecProblem
from launcher.gpus import GPUS, expand_gpu
from launcher.registry import is_reference
from launcher.spec_base import (
    Duration,
    EnvName,
    FolderName,
    GpuName,
    HfRepo,
    HttpUrl,
    ImageName,
    KaggleRef,
    SecretName,
    Sha256,
    Slug,
    StrictModel,
    spec_error,
)
from launcher.spec_errors import (
    Locator,
    YamlDoc,
    apply_overrides,
    apply_profile,
    did_you_mean,
    parse_yaml,
    problems_from,
)
from launcher.targets.colab.options import ColabOptions
from launcher.targets.kaggle.options import KaggleOptions
from launcher.targets.local.options import LocalOptions
from launcher.targets.vast.options import VastOptions

# ---- sections -------------------------------------------------------------------------------

_FOLDER_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class GpuSpec(StrictModel):
    count: Annotated[int, Field(ge=0, le=16, description="GPUs per machine; 0 runs on CPU.")] = 0
    types: Annotated[
        list[GpuName],
        Field(
            description="Acceptable GPU models, best first (RTX_4090, A100, T4, ...). Family "
            "names (A100, H100) expand to their models. Empty means any GPU.",
        ),
    ] = Field(default_factory=list)
    min_vram_gb: Annotated[
        float | None, Field(gt=0, description="Least memory per GPU, in GB.")
    ] = None

    @model_validator(mode="after")
    def _normalise(self) -> GpuSpec:
        need = self.min_vram_gb
        small = [t for t in self.types if t in GPUS and need and GPUS[t].vram_gb < need]
        if small:
            has = ", ".join(f"{t} has {GPUS[t].vram_gb:g} GB" for t in small)
            raise spec_error(f"{has}: less than min_vram_gb {need:g}")
        self.types = list(dict.fromkeys(m for name in self.types for m in expand_gpu(name)))
        return self


class ResourcesSpec(StrictModel):
    gpu: Annotated[GpuSpec, Field(description="GPU needs.")] = Field(default_factory=GpuSpec)
    cpus: Annotated[int | None, Field(ge=1, description="Least CPU cores.")] = None
    memory_gb: Annotated[float | None, Field(gt=0, description="Least RAM, in GB.")] = None
    disk_gb: Annotated[float, Field(gt=0, description="Disk for the job, in GB.")] = 20


class InputSpec(StrictModel):
    """One input, from exactly one source; each target delivers it to $LAUNCH_INPUT_DIR/<as>
    its fastest honest way (`launch plan` says which, launcher/inputs.py decides)."""

    kaggle: Annotated[KaggleRef | None, Field(description="A Kaggle dataset: owner/slug.")] = None
    path: Annotated[
        str | None,
        Field(min_length=1, description="A local folder, relative to the project root."),
    ] = None
    hf: Annotated[
        HfRepo | None,
        Field(
            description="A Hugging Face Hub repository: org/name (a model) or "
            "datasets/org/name; every file of it lands under the folder."
        ),
    ] = None
    revision: Annotated[
        str | None,
        Field(
            min_length=1,
            description="The hf repository's branch, tag or commit (default: main); the run "
            "pins the commit it points at when it starts.",
        ),
    ] = None
    url: Annotated[
        HttpUrl | None,
        Field(description="A file to download (http or https); lands as <as>/<file name>."),
    ] = None
    sha256: Annotated[
        Sha256 | None,
        Field(description="The url's sha256; the file is refused when it differs."),
    ] = None
    unpack: Annotated[
        bool,
        Field(
            description="Unpack the url's archive (.zip, .tar, .tar.gz, .tgz, .tar.bz2, "
            ".tar.xz) into the folder instead of keeping the file."
        ),
    ] = False
    name: Annotated[
        FolderName | None,
        Field(
            alias="as",
            description="Folder name under $LAUNCH_INPUT_DIR (default: the slug, the "
            "folder's last component, or the url's file name without its extension).",
        ),
    ] = None

    @model_validator(mode="after")
    def _one_source(self) -> InputSpec:
        sources = [s for s in (self.kaggle, self.path, self.url, self.hf) if s is not None]
        if len(sources) != 1:
            raise spec_error(
                "an input has exactly one of `kaggle: owner/slug`, `path: dir`, "
                "`url: https://...` or `hf: org/name`"
            )
        if self.revision is not None and self.hf is None:
            raise spec_error("`revision:` is for an `hf:` input; this input has no hf")
        if self.sha256 is not None and self.url is None:
            raise spec_error("`sha256:` checks a `url:` input; this input has no url")
        if self.unpack and self.url is None:
            raise spec_error("`unpack:` is for a `url:` input's archive; this input has no url")
        if self.name is None:
            if self.url is not None:
                from launcher.launch_fetch import url_file_name  # urllib: only when needed

                stem = url_file_name(self.url).split(".", 1)[0]
                self.name = _FOLDER_UNSAFE.sub("-", stem).strip("-.") or "input"
            else:
                source = self.kaggle or self.path or self.hf or ""
                self.name = Path(source.rstrip("/")).name or "input"
        return self

    @property
    def source(self) -> str:
        """How the input is written in the spec, for messages: kaggle:o/s, path:d, url:u."""
        if self.kaggle is not None:
            return f"kaggle:{self.kaggle}"
        if self.path is not None:
            return f"path:{self.path}"
        if self.hf is not None:
            return f"hf:{self.hf}" + (f"@{self.revision}" if self.revision else "")
        return f"url:{self.url}"


class OutputsSpec(StrictModel):
    sync_every: Annotated[
        Duration,
        Field(description='How often outputs are pulled while the job runs ("30s", "5m", "1h").'),
    ] = 300.0


class LimitsSpec(StrictModel):
    max_hours: Annotated[
        float | None, Field(gt=0, description="Stop the job (after a checkpoint) after this.")
    ] = None
    max_cost_usd: Annotated[
        float | None, Field(ge=0, description="Stop the job before it costs more than this.")
    ] = None
    grace_seconds: Annotated[
        float, Field(ge=0, description="Time the job gets to checkpoint after SIGTERM.")
    ] = 30
    max_attempts: Annotated[
        int | None,
        Field(
            ge=1,
            le=100,
            description="Attempts a run may use when the platform ends one early (a pre-empted "
            "machine, a session cap, a lost machine); each resumes from the newest checkpoint. "
            "Default: the target's (local 1, vast 4, kaggle targets.kaggle.max_sessions).",
        ),
    ] = None


class TargetsSpec(StrictModel):
    local: Annotated[LocalOptions | None, Field(description="Options of the local target.")] = None
    vast: Annotated[VastOptions | None, Field(description="Options of the Vast.ai target.")] = None
    kaggle: Annotated[KaggleOptions | None, Field(description="Options of the Kaggle target.")] = (
        None
    )
    colab: Annotated[ColabOptions | None, Field(description="Options of the Colab target.")] = None

    @overload
    def for_target(self, name: Literal["local"]) -> LocalOptions: ...
    @overload
    def for_target(self, name: Literal["vast"]) -> VastOptions: ...
    @overload
    def for_target(self, name: Literal["kaggle"]) -> KaggleOptions: ...
    @overload
    def for_target(self, name: Literal["colab"]) -> ColabOptions: ...
    @overload
    def for_target(self, name: str) -> StrictModel: ...
    def for_target(self, name: str) -> StrictModel:
        """The options configured for target `name`, or that target's defaults."""
        fields = type(self).model_fields
        if name not in fields:
            raise KeyError(f"no options for target '{name}' (known: {', '.join(fields)})")
        configured: StrictModel | None = getattr(self, name)
        return configured if configured is not None else _OPTIONS[name]()


_OPTIONS: dict[str, type[StrictModel]] = {
    "local": LocalOptions,
    "vast": VastOptions,
    "kaggle": KaggleOptions,
    "colab": ColabOptions,
}


class JobSpec(StrictModel):
    """One job: what to run, on what, with which inputs, limits and per-target options."""

    name: Annotated[Slug, Field(description="Job name: a-z, 0-9, '-', '_'; up to 63 chars.")]
    image: Annotated[
        ImageName | None,
        Field(
            description="Image folder under images/ (Dockerfile + requirements.txt), built here "
            "(and pushed to $LAUNCH_REGISTRY for targets that pull); or a registry image "
            "(pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime, ghcr.io/org/img:tag)."
        ),
    ] = None
    workload: Annotated[
        str | None,
        Field(
            min_length=1,
            description="Folder shipped in the bundle, relative to the project root "
            "(default: workloads/<name>).",
        ),
    ] = None
    run: Annotated[
        str, Field(min_length=1, description="Shell command, run in the workload folder.")
    ]
    resources: Annotated[ResourcesSpec, Field(description="What the job needs.")] = Field(
        default_factory=ResourcesSpec
    )
    inputs: Annotated[
        list[InputSpec],
        Field(description="Data mounted under $LAUNCH_INPUT_DIR/<as>."),
    ] = Field(default_factory=lambda: list[InputSpec]())
    outputs: Annotated[OutputsSpec, Field(description="Pulling results back.")] = Field(
        default_factory=OutputsSpec
    )
    env: Annotated[
        dict[EnvName, str],
        Field(description="Environment variables (values are strings)."),
    ] = Field(default_factory=dict)
    secrets: Annotated[
        list[SecretName],
        Field(
            description="Names of environment variables read from your shell at launch; the "
            "values never enter the spec, the bundle or the logs.",
        ),
    ] = Field(default_factory=list)
    limits: Annotated[LimitsSpec, Field(description="Stop rules.")] = Field(
        default_factory=LimitsSpec
    )
    targets: Annotated[TargetsSpec, Field(description="Per-target options.")] = Field(
        default_factory=TargetsSpec
    )
    profiles: Annotated[
        dict[Slug, dict[str, Any]],
        Field(
            description="Named partial specs, deep-merged over this one with --profile NAME.",
        ),
    ] = Field(default_factory=dict)

    _source_path: Path = PrivateAttr(default_factory=Path)
    _project_root: Path = PrivateAttr(default_factory=Path)

    @field_validator("inputs")
    @classmethod
    def _unique_inputs(cls, inputs: list[InputSpec]) -> list[InputSpec]:
        names = [i.name for i in inputs]
        twice = sorted({n for n in names if n is not None and names.count(n) > 1})
        if twice:
            raise spec_error(f"two inputs are named {', '.join(twice)}; give one another `as:`")
        return inputs

    @model_validator(mode="after")
    def _default_workload(self) -> JobSpec:
        if self.workload is None:
            self.workload = f"workloads/{self.name}"
        return self

    def set_source(self, source_path: Path) -> None:
        """Record the file this spec was read from; the project root is found from it: the
        nearest folder (the spec's own included) holding `workloads/`, `images/` or `.git`."""
        self._source_path = source_path.resolve()
        self._project_root = _project_root(self._source_path.parent)

    @property
    def source_path(self) -> Path:
        return self._source_path

    @property
    def project_root(self) -> Path:
        return self._project_root

    @property
    def workload_path(self) -> Path:
        return self._project_root / (self.workload or f"workloads/{self.name}")

    @property
    def image_dir(self) -> Path | None:
        """The image folder the job's image is built from (None for a registry image)."""
        if not self.image or is_reference(self.image):
            return None
        return self._project_root / "images" / self.image

    @property
    def image_ref(self) -> str | None:
        """The registry image the job names (None for an image folder)."""
        return self.image if self.image and is_reference(self.image) else None

    def resolved_dict(self) -> dict[str, Any]:
        """The validated spec as plain JSON data (profiles removed): what a run record keeps."""
        return self.model_dump(mode="json", by_alias=True, exclude={"profiles"})

    def digest(self) -> str:
        """sha256 of the canonical JSON of `resolved_dict()`: equal specs, equal digests."""
        text = json.dumps(self.resolved_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


# ---- loading ----------------------------------------------------------------------------------


def load_spec(
    path: Path,
    *,
    profile: str | None = None,
    overrides: Sequence[str] = (),
    allow_outside: bool = False,
) -> JobSpec:
    """Read, merge and validate a job spec. Raises SpecError listing every problem found.

    A workload folder outside the project (`workload: ../elsewhere`) is a problem unless
    `allow_outside`: a spec from a cloned repository must not ship files from elsewhere on
    this machine unless the user running it says so.
    """
    path = Path(path)
    doc, problems = _read(path)
    spec = None
    if doc is not None:
        spec, problems = _build(path, doc, profile, overrides, allow_outside)
    if spec is None or problems:
        raise SpecError(problems)
    return spec


def validate_files(paths: Iterable[Path]) -> list[SpecProblem]:
    """Every problem of every file (a folder means its *.yaml), each profile applied in turn."""
    found: dict[SpecProblem, None] = {}
    for path in _expand(paths, found):
        doc, problems = _read(path)
        found.update(dict.fromkeys(problems))
        if doc is None:
            continue
        data: dict[str, Any] = doc.data  # _read returns a doc only when its data is a mapping
        profiles: Any = data.get("profiles")
        names = (
            [str(p) for p in cast(dict[Any, Any], profiles)] if isinstance(profiles, dict) else []
        )
        for name in [None, *names]:
            found.update(dict.fromkeys(_build(path, doc, name, ())[1]))
    return list(found)


def json_schema() -> dict[str, Any]:
    """JSON Schema of a job spec, for editors (`launch schema > spec.schema.json`)."""
    schema = JobSpec.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _expand(paths: Iterable[Path], found: dict[SpecProblem, None]) -> list[Path]:
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            specs = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not specs:
                found[SpecProblem(str(path), None, "", "no job specs (*.yaml) in this folder")] = (
                    None
                )
            out += specs
        else:
            out.append(path)
    return out


def _read(path: Path) -> tuple[YamlDoc | None, list[SpecProblem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [SpecProblem(str(path), None, "", "file not found")]
    except (OSError, UnicodeDecodeError) as e:
        return None, [SpecProblem(str(path), None, "", f"cannot read the file: {e}")]
    doc = parse_yaml(text, str(path))
    if doc.problems and doc.data is None:
        return None, doc.problems
    if not isinstance(doc.data, dict):
        got = "an empty file" if doc.data is None else f"a {type(doc.data).__name__}"
        message = f"a job spec is a mapping (name: ..., run: ...), got {got}"
        return None, [*doc.problems, SpecProblem(str(path), doc.lines.get(()), "", message)]
    return doc, doc.problems


def _build(
    path: Path,
    doc: YamlDoc,
    profile: str | None,
    overrides: Sequence[str],
    allow_outside: bool = False,
) -> tuple[JobSpec | None, list[SpecProblem]]:
    loc = Locator(str(path), doc)
    data: dict[str, Any] = copy.deepcopy(doc.data)
    problems = list(doc.problems)
    if profile is not None:
        problems += apply_profile(data, profile, loc)
    problems += apply_overrides(data, overrides, loc)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as e:
        return None, _in_order(problems + problems_from(e, data, JobSpec, loc), loc.file)
    spec.set_source(path)
    problems += _check_folders(spec, data, loc, allow_outside)
    return spec, _in_order(problems, loc.file)


def _in_order(problems: list[SpecProblem], file: str) -> list[SpecProblem]:
    return sorted(problems, key=lambda p: (p.file != file, p.line or 0))


def _project_root(start: Path) -> Path:
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in ("workloads", "images", ".git")):
            return folder
    return start


def _check_folders(
    spec: JobSpec, data: dict[str, Any], loc: Locator, allow_outside: bool = False
) -> list[SpecProblem]:
    problems: list[SpecProblem] = []
    workload = spec.workload_path
    where = ("workload",) if "workload" in data else ("name",)
    if not workload.is_dir():
        message = f"folder {spec.workload} not found under {spec.project_root}"
        if "workload" in data:
            problems.append(loc.problem(("workload",), message))
        else:
            message += f" (the default for a job named {spec.name}); set `workload:`"
            problems.append(SpecProblem(loc.file, loc.line(("name",)), "workload", message))
    elif not workload.resolve().is_relative_to(spec.project_root.resolve()) and not allow_outside:
        message = (
            f"folder {spec.workload} is outside the project ({spec.project_root}): its files "
            "would be bundled and uploaded; run with --allow-outside-workload if you mean it"
        )
        problems.append(SpecProblem(loc.file, loc.line(where), "workload", message))
    elif not any(p.is_file() for p in workload.rglob("*") if ".git" not in p.parts):
        message = f"folder {spec.workload} holds no files: there would be nothing to run"
        problems.append(SpecProblem(loc.file, loc.line(where), "workload", message))
    if spec.image_dir is not None and not spec.image_dir.is_dir():
        images = spec.project_root / "images"
        known = [p.name for p in images.iterdir() if p.is_dir()] if images.is_dir() else []
        message = f"image folder images/{spec.image} not found under {spec.project_root}"
        problems.append(loc.problem(("image",), message, did_you_mean(spec.image or "", known)))
    return problems
