"""Tiny random-weight models of each default's architecture, built with the libraries' own config classes.

No hub, no downloads: each builder makes a model a few kilobytes big, saves it with
``save_pretrained`` and the backends load it back with ``from_pretrained`` — the real
loading and inference code paths, at toy sizes. The outputs are nonsense (random
weights) but deterministic, which is all the pipeline tests need. One builder per
default: SmolVLM (Idefics3), SD-Turbo (SD 2.1), SDXL-Turbo (SDXL), FLUX.1-schnell (Flux);
:data:`DEFAULTS` maps their hub ids to them.
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


# SmolVLM's own chat template (HuggingFaceTB/SmolVLM-256M-Instruct, chat_template.json).
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def build_smolvlm(folder: Path) -> Path:
    """SmolVLM's architecture (Idefics3: SigLIP-style vision tower, pixel-shuffle connector,
    Llama text model) with its processor, image splitting and chat template, at toy size."""
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
        PreTrainedTokenizerFast,
    )

    try:
        from transformers import Idefics3ImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers
        from transformers import Idefics3ImageProcessor as ImageProcessor

    special = ["<pad>", "<unk>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>"]
    tags = ["<global-img>"] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    vocab = {token: i for i, token in enumerate([*special, *tags, "User", "Assistant", ":", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")  # joins word tokens with spaces
    core.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
    core.add_tokens([AddedToken(t, normalized=False, special=False) for t in tags])  # never split
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
    )
    # 32-pixel tiles in 8-pixel patches, pixel-shuffled by 2: (32 / 8)² / 2² = 4 tokens a tile.
    vision = Idefics3VisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    processor = Idefics3Processor(
        image_processor=ImageProcessor(
            size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True
        ),
        tokenizer=tokenizer,
        image_seq_len=4,
        chat_template=SMOLVLM_TEMPLATE,
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
    config = Idefics3Config(
        vision_config=vision, text_config=text, scale_factor=2, image_token_id=vocab["<image>"], pad_token_id=0
    )
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config)
    # Random weights may well pick a special token or tag first, which decodes to an empty
    # description; a real model would say something, so make this one always speak words.
    model.generation_config.suppress_tokens = [
        vocab[token] for token in [*special, *tags] if token != "<end_of_utterance>"
    ]
    model.generation_config.eos_token_id = vocab["<end_of_utterance>"]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _clip_tokenizer(scratch: Path, max_length: int = 77) -> Any:
    """A letter-level CLIP BPE tokenizer (no merges): enough to turn any prompt into ids."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "vocab.json").write_text(json.dumps(vocab))
    (scratch / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(scratch / "vocab.json"), str(scratch / "merges.txt"), model_max_length=max_length)


def _clip_text_config(**extra: Any) -> Any:
    """A one-layer CLIP text tower over the letter vocabulary (54 ids), hidden size 16."""
    from transformers import CLIPTextConfig

    settings: dict[str, Any] = {
        "vocab_size": 54,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,  # CLIP's context
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
        "hidden_act": "gelu",  # OpenCLIP's (SD 2.x, SDXL's second encoder)
    }
    settings.update(extra)
    return CLIPTextConfig(**settings)


def _vae(**extra: Any) -> Any:
    """A two-level AutoencoderKL: VAE factor 2 (the real ones have 8)."""
    from diffusers import AutoencoderKL

    settings: dict[str, Any] = {
        "block_out_channels": [8, 16],
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 2,
        "up_block_types": ["UpDecoderBlock2D"] * 2,
        "latent_channels": 4,
        "norm_num_groups": 4,
        "sample_size": 32,
    }
    settings.update(extra)
    return AutoencoderKL(**settings)


def _unet(**extra: Any) -> Any:
    """A two-level UNet2DConditionModel with one cross-attention level (the SD and SDXL toys)."""
    from diffusers import UNet2DConditionModel

    settings: dict[str, Any] = {
        "block_out_channels": (8, 16),
        "layers_per_block": 1,
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 4,
        "attention_head_dim": (2, 4),
        "use_linear_projection": True,
    }
    settings.update(extra)
    return UNet2DConditionModel(**settings)


_TURBO_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "timestep_spacing": "trailing",
    "steps_offset": 1,
}
"""The Euler scheduler settings sd-turbo and sdxl-turbo share (their scheduler_config.json)."""


def build_sd(folder: Path) -> Path:
    """SD-Turbo's architecture (Stable Diffusion 2.1: linear-projection transformer blocks,
    per-level head dims, an OpenCLIP-style text tower) and its scheduler, at toy size."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    scratch = folder.parent / (folder.name + "-tok")
    tokenizer = _clip_tokenizer(scratch)
    torch.manual_seed(0)
    unet = _unet(cross_attention_dim=16)
    # sd-turbo's scheduler_config.json, except the toy model's sizes
    scheduler = EulerDiscreteScheduler(**_TURBO_SCHEDULER, prediction_type="epsilon")
    pipe = StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_clip_text_config()),
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


def build_sdxl(folder: Path) -> Path:
    """SDXL-Turbo's architecture (two text towers, the second with a projection; a UNet
    conditioned on the pooled text and the size/crop ids) and its scheduler, at toy size."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    scratch = folder.parent / (folder.name + "-tok")
    tokenizer = _clip_tokenizer(scratch)
    torch.manual_seed(0)
    unet = _unet(
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=16 + 6 * 8,  # pooled text + six size/crop ids
        cross_attention_dim=32,  # both towers' hidden states, concatenated
    )
    scheduler = EulerAncestralDiscreteScheduler(**_TURBO_SCHEDULER)
    pipe = StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_clip_text_config(hidden_act="quick_gelu")),
        text_encoder_2=CLIPTextModelWithProjection(_clip_text_config(projection_dim=16)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(folder)
    shutil.rmtree(scratch)
    return folder


def build_flux(folder: Path) -> Path:
    """FLUX.1-schnell's architecture (a Flux transformer with no guidance embedding, CLIP
    and T5 text towers, a flow-matching scheduler without dynamic shift), at toy size."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel, T5TokenizerFast

    scratch = folder.parent / (folder.name + "-tok")
    clip_tokenizer = _clip_tokenizer(scratch)
    # A SentencePiece-style unigram vocabulary: T5's three specials, then "▁word" pieces and letters.
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + w, -1.0) for w in WORDS] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"] + [("▁", -2.0)]
    t5_tokenizer = T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=32)
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * 4,  # latents packed 2×2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,  # T5's d_model
        pooled_projection_dim=16,  # CLIP's pooled output
        guidance_embeds=False,  # schnell is guidance-distilled away
        axes_dims_rope=(4, 4, 8),
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(pieces),
            d_model=16,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    vae = _vae(
        block_out_channels=[8, 8],
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.1159,
        scaling_factor=0.3611,
    )
    # FLUX.1-schnell's scheduler_config.json
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=CLIPTextModel(_clip_text_config()),
        tokenizer=clip_tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
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


DEFAULTS = {
    "HuggingFaceTB/SmolVLM-256M-Instruct": build_smolvlm,
    "stabilityai/sd-turbo": build_sd,
    "stabilityai/sdxl-turbo": build_sdxl,
    "black-forest-labs/FLUX.1-schnell": build_flux,
}
"""The hf backend's defaults (captioner, and the registry's generators) → their toy builders."""
