#!/usr/bin/env python3
"""Writes a tiny random-weight LLaVA-style model pair for the tests.

    gen_tiny_model.py OUT_DIR

writes OUT_DIR/tiny-text.gguf (llama architecture, 64-wide, 2 blocks),
OUT_DIR/tiny-llava.gguf (the same weights named as a LLaVA model and
written without a chat template, as LLaVA-1.5's GGUFs are),
OUT_DIR/tiny-text-b.gguf (the same shape from another seed: a second,
different model that the same projector fits, for tests of several passes),
OUT_DIR/tiny-mmproj.gguf (a CLIP vision tower with an MLP projector to 64)
and OUT_DIR/tiny-mmproj-mismatch.gguf (projects to 96: llama-server refuses
the pair). Deterministic from a fixed seed; well under 1 MB together.

Random weights alone make a model that emits invalid UTF-8 or never stops.
One residual dimension is therefore held constant, so one column of the
output matrix acts as a fixed per-token logit prior: strongly negative for
bytes >= 0x80, control characters, whitespace, backslash and backtick,
strongly positive for the end tokens, a small bonus on '"'. Answers are then
short, schema-valid JSON that still depends on the image.
"""

import sys
from pathlib import Path

import numpy as np
import gguf

SEED = 20261127
N_EMBD, N_FF, N_BLOCK, N_HEAD, ROPE_DIM = 64, 128, 2, 4, 16
RESIDUAL_CONST = 10.0
QUOTE_BONUS = 150
V_EMBD, V_FF, V_BLOCK, V_HEAD, IMAGE, PATCH = 48, 96, 2, 4, 32, 8
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def vocab():
    tokens, types, prior = [], [], []

    def add(text, kind, logit):
        tokens.append(text)
        types.append(kind)
        prior.append(logit)

    add("<unk>", gguf.TokenType.UNKNOWN, -300.0)
    add("<s>", gguf.TokenType.CONTROL, -300.0)
    add("</s>", gguf.TokenType.CONTROL, 40.0)
    add("<|im_start|>", gguf.TokenType.CONTROL, -300.0)
    add("<|im_end|>", gguf.TokenType.CONTROL, 40.0)
    for b in range(256):
        printable = 0x21 <= b <= 0x7E and chr(b) not in "\\`"
        add(f"<0x{b:02X}>", gguf.TokenType.BYTE, 0.0 if printable else -300.0)
    add("\u2581", gguf.TokenType.NORMAL, -300.0)  # the SentencePiece space
    for c in range(0x21, 0x7F):
        ch = chr(c)
        logit = -300.0 if ch in "\\`" else (QUOTE_BONUS if ch == '"' else 0.0)
        add(ch, gguf.TokenType.NORMAL, logit)
    return tokens, types, np.array(prior, dtype=np.float32)


def write_text_model(path, rng, template=True):
    tokens, types, prior = vocab()
    n_vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"cinecut-{path.stem}")
    w.add_context_length(2048)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_BLOCK)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_dimension_count(ROPE_DIM)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    if template:
        w.add_chat_template(CHATML)

    def rand(*shape, scale=0.05):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    # Dimension 0 of the residual stream is a large constant: no block reads
    # or writes it, and after the final RMS norm it is about sqrt(N_EMBD).
    embd = rand(n_vocab, N_EMBD, scale=0.3)
    embd[:, 0] = RESIDUAL_CONST
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    out = rand(n_vocab, N_EMBD, scale=0.5)
    out[:, 0] = prior / np.sqrt(N_EMBD)
    w.add_tensor("output.weight", out)
    for i in range(N_BLOCK):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v"):
            m = rand(N_EMBD, N_EMBD, scale=0.3)
            m[:, 0] = 0.0
            w.add_tensor(f"blk.{i}.{name}.weight", m)
        o = rand(N_EMBD, N_EMBD, scale=0.3)
        o[0, :] = 0.0
        w.add_tensor(f"blk.{i}.attn_output.weight", o)
        for name in ("ffn_gate", "ffn_up"):
            m = rand(N_FF, N_EMBD, scale=0.3)
            m[:, 0] = 0.0
            w.add_tensor(f"blk.{i}.{name}.weight", m)
        d = rand(N_EMBD, N_FF, scale=0.3)
        d[0, :] = 0.0
        w.add_tensor(f"blk.{i}.ffn_down.weight", d)
    finish(w)


def write_mmproj(path, rng, out_embd):
    w = gguf.GGUFWriter(str(path), "clip")
    w.add_name("cinecut-tiny-mmproj")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_text_encoder", False)
    w.add_string("clip.projector_type", "mlp")
    w.add_bool("clip.use_gelu", True)
    w.add_uint32("clip.vision.image_size", IMAGE)
    w.add_uint32("clip.vision.patch_size", PATCH)
    w.add_uint32("clip.vision.embedding_length", V_EMBD)
    w.add_uint32("clip.vision.feed_forward_length", V_FF)
    w.add_uint32("clip.vision.projection_dim", out_embd)
    w.add_uint32("clip.vision.block_count", V_BLOCK)
    w.add_uint32("clip.vision.attention.head_count", V_HEAD)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    def rand(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    n_patches = (IMAGE // PATCH) ** 2
    w.add_tensor("v.patch_embd.weight", rand(V_EMBD, 3, PATCH, PATCH))
    w.add_tensor("v.position_embd.weight", rand(n_patches, V_EMBD))
    for i in range(V_BLOCK):
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(f"v.blk.{i}.{name}.weight", rand(V_EMBD, V_EMBD))
            w.add_tensor(f"v.blk.{i}.{name}.bias", rand(V_EMBD))
        for name in ("ln1", "ln2"):
            w.add_tensor(f"v.blk.{i}.{name}.weight", np.ones(V_EMBD, dtype=np.float32))
            w.add_tensor(f"v.blk.{i}.{name}.bias", np.zeros(V_EMBD, dtype=np.float32))
        w.add_tensor(f"v.blk.{i}.ffn_up.weight", rand(V_FF, V_EMBD))
        w.add_tensor(f"v.blk.{i}.ffn_up.bias", rand(V_FF))
        w.add_tensor(f"v.blk.{i}.ffn_down.weight", rand(V_EMBD, V_FF))
        w.add_tensor(f"v.blk.{i}.ffn_down.bias", rand(V_EMBD))
    w.add_tensor("mm.0.weight", rand(N_EMBD, V_EMBD))
    w.add_tensor("mm.0.bias", rand(N_EMBD))
    # Image embeddings land in the residual stream: keep dimension 0 untouched there too.
    mm2 = rand(out_embd, N_EMBD, scale=0.1)
    mm2[0, :] = 0.0
    w.add_tensor("mm.2.weight", mm2)
    b2 = rand(out_embd, scale=0.1)
    b2[0] = RESIDUAL_CONST
    w.add_tensor("mm.2.bias", b2)
    finish(w)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    write_text_model(out / "tiny-text.gguf", np.random.default_rng(SEED))
    write_text_model(out / "tiny-text-b.gguf", np.random.default_rng(SEED + 2))
    write_text_model(out / "tiny-llava.gguf", np.random.default_rng(SEED), template=False)
    write_mmproj(out / "tiny-mmproj.gguf", np.random.default_rng(SEED + 1), N_EMBD)
    write_mmproj(out / "tiny-mmproj-mismatch.gguf", np.random.default_rng(SEED + 1), 96)


if __name__ == "__main__":
    main()
