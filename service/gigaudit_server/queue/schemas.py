"""One schema per job kind: the parameters the API queues and the worker reads (torch-free, pydantic).

The API builds a job's parameters with these models (``to_params``), so its range checks live here once; the worker
parses them back (``parse``); ``docs/jobs.md`` is generated from them (``python -m gigaudit_server.queue.schemas``).
An option left ``None`` is left out of the job, and the ``gig`` core's keyword default applies: no default is
restated here. Bounds guard the service (memory, time), not the method.
"""
from __future__ import annotations

import re
import sys
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="sha256, 64 lowercase hex digits")]
ResourceName = Annotated[str, Field(min_length=1, max_length=300, description="resource name")]

__all__ = ["KINDS", "ValidationError", "parse", "to_params"]


class _Schema(BaseModel):
    # unknown keys are ignored: a record may carry more than a job needs (e.g. a model's size_bytes)
    model_config = ConfigDict(extra="ignore", frozen=True)


Scalar = str | int | float | bool


class PreprocessingSpec(_Schema):
    """How an image becomes the model's input (``gig.preprocessing.Preprocessing``). In a registration request a
    field left at its zero value comes from the model's own configuration, else the defaults; in a registered
    model's record every field is resolved."""
    height: int = Field(0, ge=0, le=4096, description="input height in pixels (0: unset)")
    width: int = Field(0, ge=0, le=4096, description="input width in pixels (0: unset)")
    resize_mode: Literal["", "shorter_side_crop", "exact"] = Field("", description="empty: unset")
    crop_pct: float = Field(0.0, ge=0, le=1, description="fraction the centre crop keeps (0: unset)")
    interpolation: Literal["", "bilinear", "bicubic", "nearest", "lanczos"] = Field("", description="empty: unset")
    crop_offset: Literal["", "round", "floor"] = Field(
        "", description="where the crop starts in its margin: torchvision's round(m / 2), HF's m // 2 (empty: unset)")
    mean: list[float] = Field(default_factory=list, max_length=3, description="3 values, or empty: unset")
    std: list[float] = Field(default_factory=list, max_length=3, description="3 positive values, or empty: unset")
    source: str = Field("", max_length=200, description="where the choices came from")

    @field_validator("mean", "std")
    @classmethod
    def _rgb(cls, values: list[float], info) -> list[float]:
        if values and len(values) != 3:
            raise ValueError(f"{info.field_name} needs 3 values (RGB) or none")
        if info.field_name == "std" and values and min(values) <= 0:
            raise ValueError("std values must all be positive")
        return values


class TracerSpec(_Schema):
    """How the model's layers are found when torch.fx cannot trace it as it is (``gig.layers.TracerOptions``)."""
    leaf_modules: list[str] = Field(default_factory=list, max_length=64,
                                    description="module class names or paths fx keeps whole")
    autowrap_functions: list[str] = Field(default_factory=list, max_length=64,
                                          description="'module.function' of imported modules fx does not enter")
    hooked_layers: list[str] = Field(default_factory=list, max_length=64,
                                     description="module paths captured with forward hooks (fx not used)")


class ModelSpec(_Schema):
    """What a worker needs to build a registered model."""
    name: ResourceName
    architecture: str = Field(min_length=1, description="a name from ListArchitectures")
    num_classes: int = Field(ge=1)
    class_names: list[str] = Field(default_factory=list)
    input_size: int = Field(0, ge=0, le=4096, description="side of a square input in pixels (0: from preprocessing)")
    mean: list[float] = Field(default_factory=list, max_length=3, description="3 values, or empty")
    std: list[float] = Field(default_factory=list, max_length=3, description="3 positive values, or empty")
    weights_sha256: Sha256
    architecture_options: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict, max_length=32, description="keyword arguments of the architecture's builder")
    preprocessing: PreprocessingSpec = Field(default_factory=PreprocessingSpec)
    tracer: TracerSpec = Field(default_factory=TracerSpec)

    _rgb = field_validator("mean", "std")(PreprocessingSpec._rgb.__func__)


class DatasetSpec(_Schema):
    """A registered dataset: an artifact in the store (``sha256``), or data read in place at ``uri``."""
    name: ResourceName
    sha256: Sha256
    format: Literal["tar", "zip", "webdataset", "parquet", "hf_dataset", "csv_manifest", "jsonl_manifest"]
    n_images: int = Field(ge=0)
    class_names: list[str] = Field(default_factory=list)
    uri: str = Field("", description="where the data is read in place (empty: the stored artifact)")
    image_column: str = Field("", max_length=200, description="parquet, HF datasets, manifests: the image column")
    label_column: str = Field("", max_length=200, description="parquet, HF datasets, manifests: the label column")


class ConceptOptions(_Schema):
    """Concept extraction (``gig.extract_concepts``); None: gig's default."""
    n_concepts: int | None = Field(None, ge=1, le=65_536, description="concepts per layer")
    method: str | None = Field(None, min_length=1, description="clustering method, e.g. kmeans or nmf")
    pfvs_per_image: int | None = Field(None, ge=1, le=1024, description="PFVs sampled per image")
    sampling: str | None = Field(None, min_length=1, description="PFV sampling scheme")
    lam: float | None = Field(None, ge=0, description="Lasso penalty (relative to the layer's scale by default)")
    seed: int | None = Field(None, description="random seed")


class GraphOptions(_Schema):
    """Concept graphs (``gig.build_graph``); None: gig's default."""
    steps: int | None = Field(None, ge=1, le=1024, description="quadrature steps per segment")
    top_t: int | None = Field(None, ge=1, le=1024, description="target concepts kept per source concept")
    method: str | None = Field(None, min_length=1, description="quadrature method, e.g. auto or legendre")
    path: str | None = Field(None, min_length=1, description="integration path")


class _Job(_Schema):
    kind: ClassVar[str]


class ValidateModel(_Job):
    """Load the uploaded weights strictly into the architecture, run one input, list the layers."""
    kind: ClassVar[str] = "validate_model"
    model_id: str = Field("", description="the model being registered (empty: a check only)")
    model: ModelSpec


class ExtractConcepts(ConceptOptions, _Job):
    """Extract a concept set at the analysed layers."""
    kind: ClassVar[str] = "extract_concepts"
    model: ModelSpec
    dataset: DatasetSpec
    layers: list[str] = Field(min_length=1)
    concept_set: str = Field("", max_length=300, description="the concept set it creates or reads (empty: none)")


class BuildGraph(GraphOptions, _Job):
    """Build the dataset-wide concept graph of a concept set (shardable)."""
    kind: ClassVar[str] = "build_graph"
    model: ModelSpec
    dataset: DatasetSpec
    layers: list[str] = Field(min_length=1)
    concept_set: str = Field("", max_length=300, description="the concept set it creates or reads (empty: none)")
    concept_set_sha: Sha256
    concept_graph: str = Field("", max_length=300, description="the concept graph it creates (empty: none)")


class Audit(_Job):
    """Extraction, graph and evaluation in one job. The two steps' ``method`` options get names of their own."""
    kind: ClassVar[str] = "audit"
    model: ModelSpec
    dataset: DatasetSpec
    layers: list[str] = Field(min_length=1)
    concept_set: str = Field("", max_length=300, description="the concept set it creates or reads (empty: none)")
    concept_graph: str = Field("", max_length=300, description="the concept graph it creates (empty: none)")
    n_concepts: int | None = ConceptOptions.model_fields["n_concepts"]
    clustering: str | None = ConceptOptions.model_fields["method"]
    pfvs_per_image: int | None = ConceptOptions.model_fields["pfvs_per_image"]
    sampling: str | None = ConceptOptions.model_fields["sampling"]
    lam: float | None = ConceptOptions.model_fields["lam"]
    seed: int | None = ConceptOptions.model_fields["seed"]
    steps: int | None = GraphOptions.model_fields["steps"]
    top_t: int | None = GraphOptions.model_fields["top_t"]
    quadrature: str | None = GraphOptions.model_fields["method"]
    path: str | None = GraphOptions.model_fields["path"]
    metrics: list[str] | None = Field(None, min_length=1, description="evaluation metrics")
    evaluation_images: int | None = Field(None, ge=1, le=100_000, description="images evaluated")
    probes: DatasetSpec | None = Field(None, description="probe images naming concepts: a folder per name, "
                                                         "optional masks in NAME/masks/; unset: concepts unnamed")


class RenderExemplars(_Job):
    """Render the exemplar PNGs of chosen concepts of a concept set."""
    kind: ClassVar[str] = "render_exemplars"
    model: ModelSpec
    dataset: DatasetSpec
    concept_set: str = Field("", max_length=300, description="the concept set it creates or reads (empty: none)")
    concept_set_sha: Sha256
    exemplars_sha: Sha256
    layer: str = Field(min_length=1)
    concepts: list[int] = Field(min_length=1, max_length=1024, description="concept indices in the layer, ≥ 0")

    @field_validator("concepts")
    @classmethod
    def _indices(cls, concepts: list[int]) -> list[int]:
        if min(concepts) < 0:
            raise ValueError("concept indices must be >= 0")
        return concepts


class ExplainImage(_Job):
    """Explain one image with a concept graph (``gig.explain``): the concepts that carried its class, iERF overlays."""
    kind: ClassVar[str] = "explain_image"
    model: ModelSpec
    concept_graph: ResourceName
    graph_sha: Sha256
    concept_set_sha: Sha256
    image_sha: Sha256 = Field(description="sha256 of the one-image archive (a datasets artifact) holding the image")
    target_class: int | None = Field(None, ge=0, description="class to explain (gig's default: the predicted one)")
    top_k: int | None = Field(None, ge=1, le=64, description="concepts kept per layer")


class ListLayers(_Job):
    """List the layers of an architecture built with random weights (ListLayers without a model)."""
    kind: ClassVar[str] = "list_layers"
    architecture: str = Field(min_length=1, description="a name from ListArchitectures")
    num_classes: int = Field(ge=1, le=1_000_000)
    architecture_options: dict[str, Scalar | list[Scalar]] = ModelSpec.model_fields["architecture_options"]
    tracer: TracerSpec = Field(default_factory=TracerSpec)


class InspectDataset(_Job):
    """Inspect a dataset registered by URI where it is: count and check its images, read its classes and sizes."""
    kind: ClassVar[str] = "inspect_dataset"
    dataset_id: str = Field(min_length=1, max_length=63)
    uri: str = Field(min_length=1, max_length=2000)
    sha256: str = Field("", description="expected sha256 of a single-file dataset (empty: not checked)")
    image_column: str = DatasetSpec.model_fields["image_column"]
    label_column: str = DatasetSpec.model_fields["label_column"]


class Noop(_Job):
    """A probe through the whole control plane."""
    kind: ClassVar[str] = "noop"
    sleep: float = Field(0.0, ge=0, le=60, description="seconds")


KINDS: dict[str, type[_Job]] = {cls.kind: cls for cls in (ValidateModel, ExtractConcepts, BuildGraph, Audit,
                                                          RenderExemplars, ExplainImage, ListLayers,
                                                          InspectDataset, Noop)}


def to_params(job: _Job) -> dict:
    """The JSON parameters of a job (options left ``None`` are left out)."""
    return job.model_dump(mode="json", exclude_none=True)


def parse(kind: str, params: dict) -> _Job:
    """The typed parameters of a queued job; ``ValueError`` for an unknown kind, ``ValidationError`` (a
    ``ValueError``) for parameters that do not fit its schema."""
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    return KINDS[kind].model_validate(params)


def describe(error: ValidationError) -> str:
    """A one-line account of what does not fit: ``field: problem; …``."""
    return "; ".join(f"{field}: {problem}" for field, problem in violations(error).items())


def violations(error: ValidationError, fields: dict[str, str] | None = None) -> dict[str, str]:
    """``{request field: description}`` for a ValidationError; ``fields`` maps schema fields to request fields."""
    found = {}
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"])
        found[(fields or {}).get(name, name)] = item["msg"]
    return found


_SYMBOLS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥", "max_length": "length ≤",
            "pattern": "matches"}


def markdown() -> str:
    """``docs/jobs.md``: every job kind and its parameters."""
    lines = ["# Job kinds and their parameters", "",
             "Generated from `service/gigaudit_server/queue/schemas.py` by `python -m gigaudit_server.queue.schemas "
             "> docs/jobs.md`; a test checks that it is current. An option marked *gig's default* is left out of the "
             "job when unset, and the `gig` core's keyword default applies.", ""]
    sections = [*((f"`{kind}`", cls) for kind, cls in KINDS.items()), ("`ModelSpec`", ModelSpec),
                ("`PreprocessingSpec`", PreprocessingSpec), ("`TracerSpec`", TracerSpec),
                ("`DatasetSpec`", DatasetSpec)]
    for title, cls in sections:
        lines += [f"## {title}", "", (cls.__doc__ or "").strip(), "", "| parameter | type | bounds | meaning |",
                  "|---|---|---|---|"]
        for name, field in cls.model_fields.items():
            bounds = ", ".join(f"{_SYMBOLS[attr]} {getattr(m, attr)}" for m in field.metadata for attr in _SYMBOLS
                               if getattr(m, attr, None) is not None)
            optional = field.default is None
            meaning = (field.description or "") + (" (unset: gig's default)" if optional else "")
            annotation = str(field.annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
            annotation = re.sub(r"\b\w+\.(?=\w)", "", annotation.replace(" | None", "").replace("|", "or"))
            lines.append(f"| `{name}` | `{annotation}` | {bounds} | {meaning.strip()} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown())
