"""Tiny random-weight text-to-video pipelines, built offline from configs.

The same pipeline classes as the real models (TextToVideoSDPipeline: UNet3D + CLIP + VAE, as in
damo-vilab/text-to-video-ms-1.7b; WanPipeline: a flow-matching DiT + UMT5 + the Wan VAE, as in
Wan-AI/Wan2.1-T2V-1.3B-Diffusers), at about a million parameters: the generation code path runs
on a CPU in about a second without any hub download. The output is structured noise, not
video: these exist to test the machinery, and to give the detector smoke run "fake" clips made
by a real diffusion pipeline.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

PIPELINES = ("text-to-video-sd", "wan")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def char_clip_tokenizer(max_length: int = 77) -> Any:
    """A CLIPTokenizer whose vocabulary is single characters (no merges): real CLIP tokenizing
    code, a vocabulary small enough for a tiny text encoder, and no file from the hub."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab.write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
        merges.write_text("#version: 0.2\n")
        return CLIPTokenizer(str(vocab), str(merges), model_max_length=max_length)


def text_to_video_sd(seed: int = 0) -> Any:
    """A TextToVideoSDPipeline with random weights (seeded): 1.5 M parameters."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        TextToVideoSDPipeline,
        UNet3DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = char_clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            vocab_size=len(tokenizer), max_position_embeddings=77, projection_dim=32,
            bos_token_id=len(tokenizer) - 2, eos_token_id=len(tokenizer) - 1,
            pad_token_id=len(tokenizer) - 1,
        )
    )  # fmt: skip
    unet = UNet3DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16,
        in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(16, 32), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4, norm_num_groups=8, sample_size=32,
    )  # fmt: skip
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False,
    )  # fmt: skip
    pipe = TextToVideoSDPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def char_wordlevel_tokenizer(max_length: int = 64) -> Any:
    """A fast tokenizer over single lowercase letters, built in memory (no sentencepiece file):
    what WanPipeline's UMT5 text encoder reads here."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=max_length,
    )  # fmt: skip


def wan(seed: int = 0) -> Any:
    """A WanPipeline with random weights (seeded): its frame count must be 4k + 1."""
    import torch
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    tokenizer = char_wordlevel_tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
    )  # fmt: skip
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )  # fmt: skip
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )  # fmt: skip
    pipe = WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build(name: str, seed: int = 0) -> Any:
    if name == "text-to-video-sd":
        return text_to_video_sd(seed)
    if name == "wan":
        return wan(seed)
    raise ValueError(f"no tiny pipeline {name!r} (choose from {', '.join(PIPELINES)})")
