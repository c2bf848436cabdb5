"""Tiny random-weight models built with the libraries' own config classes.

No hub, no downloads: each builder makes a model a few kilobytes big, saves it with
``save_pretrained`` and the backends load it back with ``from_pretrained`` — the real
loading and inference code paths, at toy sizes. The outputs are nonsense (random
weights) but deterministic, which is all the pipeline tests need.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

WORDS = [
    "a",
    "an",
    "the",
    "red",
    "green",
    "blue",
    "yellow",
    "white",
    "black",
    "cat",
    "dog",
    "tree",
    "house",
    "sky",
    "car",
    "boat",
    "person",
    "sits",
    "stands",
    "on",
    "in",
    "under",
    "near",
    "small",
    "large",
    "bright",
    "dark",
    "photo",
    "of",
    "with",
    "and",
    "grass",
    "water",
    "road",
    "field",
]


def _image_processor() -> Any:
    """CLIP's image preprocessing at 32×32 (the Pillow variant: no torchvision needed)."""
    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor as ImageProcessor
    return ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def _vision_config() -> Any:
    """A one-layer CLIP vision tower for 32×32 images in 8×8 patches."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )


def build_vlm(folder: Path) -> Path:
    """A LLaVA-style image-text-to-text model: tiny CLIP vision tower + tiny Llama."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    special = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
    vocab = {token: i for i, token in enumerate([*special, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")  # joins word tokens with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},  # never split by the pre-tokenizer
    )
    template = (
        "{% for m in messages %}{{ m['role'] }}:{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %} <image>{% else %} {{ c['text'] }}{% endif %}{% endfor %}\n"
        "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    )
    processor = LlavaProcessor(
        image_processor=_image_processor(),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=template,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    text = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    config = LlavaConfig(vision_config=_vision_config(), text_config=text, image_token_id=vocab["<image>"])
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    # Random weights may well pick a special token first, which decodes to an empty
    # description; a real model would say something, so make this one always speak.
    model.generation_config.suppress_tokens = [vocab[token] for token in special]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_sd(folder: Path) -> Path:
    """A Stable Diffusion pipeline: tiny UNet, VAE, CLIP text encoder and a letter-level tokenizer."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    scratch = folder.parent / (folder.name + "-tok")
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "vocab.json").write_text(json.dumps(vocab))
    (scratch / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(scratch / "vocab.json"), str(scratch / "merges.txt"), model_max_length=16)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        norm_num_groups=4,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    shutil.rmtree(scratch)
    return folder


def build_clip(folder: Path) -> Path:
    """A CLIP model (both towers, as ``CLIPModel`` needs) and its image processor."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

    config = CLIPConfig(
        text_config=CLIPTextConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ).to_dict(),
        vision_config=_vision_config().to_dict(),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    _image_processor().save_pretrained(folder)
    return folder


def add_to_hf_cache(hf_home: Path, repo_id: str, folder: Path) -> None:
    """Lay ``folder`` out as the Hugging Face cache would after ``hf download repo_id``."""
    revision = "0" * 40
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
