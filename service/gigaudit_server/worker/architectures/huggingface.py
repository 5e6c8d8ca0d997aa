"""Family ``huggingface``: a transformers image classifier built from the uploaded ``config.json``.

The upload is a tar or zip of what ``save_pretrained`` writes (:mod:`gigaudit_server.storage.hf_archives`). The
model is built with ``AutoConfig.for_model`` and loaded with ``AutoModelForImageClassification.from_pretrained`` from
that config and the archive's ``model.safetensors`` (so transformers' own key renames apply), never with remote
code. The loaded model's ``forward(x)`` returns the logits tensor; its module paths stay transformers' own.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import io
import json
import shutil
import tempfile
from pathlib import Path

from torch import nn

from gigaudit_server.storage.hf_archives import HfArchive, check_config, read_hf_archive
from gigaudit_server.worker.architectures.options import no_options

FAMILY = "huggingface"
WEIGHTS_FORMAT = "huggingface"
NAME = "huggingface"


def names() -> list[str]:
    """``["huggingface"]`` where transformers is installed (the server extra pins it), else none."""
    return [NAME] if importlib.util.find_spec("transformers") else []


def source(name: str) -> str:
    return f"transformers {importlib.metadata.version('transformers')}"


def describe(name: str) -> str:
    return ("A Hugging Face transformers image classifier: upload a tar or zip of save_pretrained's config.json and "
            "model.safetensors (optionally preprocessor_config.json); built without remote code.")


def build(name: str, num_classes: int, options: dict) -> nn.Module:
    raise ValueError("a huggingface architecture is built from its uploaded config.json: register the model "
                     "(UploadModel) and list the layers of models/{model}")


def image_classification_types() -> dict[str, str]:
    """``{model_type: class name}`` of transformers' image classifiers."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    return {k: v if isinstance(v, str) else v[0] for k, v in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.items()}


def image_classification_config(config: dict, num_classes: int):
    """The transformers config of ``config.json``; ``ValueError`` for remote code, a model type that is not an image
    classifier, or a class count other than the config's ``num_labels``."""
    from transformers import AutoConfig

    check_config(config)
    types = image_classification_types()
    model_type = config["model_type"]
    if model_type not in types:
        raise ValueError(f"config.json's model_type {model_type!r} is not a transformers image classifier; valid "
                         f"model types are: {', '.join(sorted(types))}")
    others = [a for a in config.get("architectures") or [] if not str(a).endswith("ForImageClassification")]
    if others:
        raise ValueError(f"config.json's architectures {others} are not image classifiers (expected "
                         f"{types[model_type]!r})")
    settings = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version")}
    try:
        built = AutoConfig.for_model(model_type, **settings)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"config.json cannot be read as a {model_type!r} config: {exc}") from None
    if built.num_labels != num_classes:
        raise ValueError(f"config.json has num_labels {built.num_labels} (id2label), but the model is registered with "
                         f"num_classes {num_classes}")
    return built


def load(data: bytes, num_classes: int, options: dict) -> tuple[nn.Module, dict, dict | None]:
    """``(model, loading_info, preprocessor_config)`` of an archive's bytes; ``loading_info`` holds transformers'
    ``missing_keys``, ``unexpected_keys`` and ``mismatched_keys`` (the caller refuses any)."""
    import torch
    from transformers import AutoModelForImageClassification

    no_options(FAMILY, options)
    archive: HfArchive = read_hf_archive(io.BytesIO(data))
    config = image_classification_config(archive.config, num_classes)
    with tempfile.TemporaryDirectory(prefix="gigaudit-hf-") as folder:
        (Path(folder) / "config.json").write_text(json.dumps(config.to_dict()))
        with archive.open_weights() as weights, open(Path(folder) / "model.safetensors", "wb") as out:
            shutil.copyfileobj(weights, out, 1024**2)
        try:
            model, info = AutoModelForImageClassification.from_pretrained(
                folder, config=config, output_loading_info=True, ignore_mismatched_sizes=True,
                local_files_only=True, trust_remote_code=False, use_safetensors=True, dtype=torch.float32)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ValueError(f"model.safetensors cannot be loaded into the {config.model_type!r} model: {exc}") \
                from None
    model.__class__ = _logits_class(type(model))
    return model, info, archive.preprocessor


@functools.cache
def _logits_class(cls: type) -> type:
    """A subclass of a transformers classifier whose ``forward(x)`` returns the logits tensor."""

    def forward(self, pixel_values):
        return cls.forward(self, pixel_values=pixel_values).logits

    return type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                       "__doc__": f"{cls.__name__} returning logits (gigaudit)"})
