"""Writes a tiny llama-architecture GGUF model with random weights.

    python tiny_gguf.py OUT.gguf [--seed N]

The model is a real llama.cpp model in every respect but its weights: two
layers, 64 wide, a SentencePiece-style vocabulary of about 900 tokens (special
tokens, the 256 byte-fallback tokens, lowercase letters, and some 300 common
English words with their prefixes) and a chat template. It is under a megabyte
and loads in well under a second, so tests can run a real inference server on
any machine.

Its output is random words, never the end-of-sequence token: every hidden state
carries a large constant component that the output layer turns into a very low
logit for the special and byte tokens. A generation therefore always runs until
`max_tokens` (finish reason "length"), and every generated token decodes to
whole UTF-8 text, so each one streams as its own chunk.
"""

import argparse

import numpy as np
import gguf

N_EMBD = 64
N_HEAD = 4
N_LAYER = 2
N_FF = 128
N_CTX = 2048

WORDS = """the of and to in is it you that he was for on are with as his they be at
one have this from or had by hot word but what some we can out other were all there
when up use your how said an each she which do their time if will way about many then
them write would like so these her long make thing see him two has look more day could
go come did number sound no most people my over know water than call first who may down
side been now find any new work part take get place made live where after back little
only round man year came show every good me give our under name very through just form
sentence great think say help low line differ turn cause much mean before move right boy
old too same tell does set three want air well also play small end put home read hand port
large spell add even land here must big high such follow act why ask men change went light
kind off need house picture try us again animal point mother world near build self earth
father head stand own page should country found answer school grow study still learn plant
cover food sun four between state keep eye never last let thought city tree cross farm hard
start might story saw far sea draw left late run while press close night real life few north""".split()

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def vocabulary():
    """Tokens, scores and types, in SentencePiece order (specials, bytes, pieces)."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    # Letters, then each word with a leading "\u2581" (the space) and every prefix
    # of it, so the tokenizer's pairwise merges can build the whole word.
    pieces = {chr(c): None for c in range(ord("a"), ord("z") + 1)}
    for word in WORDS:
        for end in range(len(word) + 1):
            pieces["\u2581" + word[:end]] = None
    pieces = list(pieces)
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    # The tokenizer merges the highest-scoring pair first: prefer longer pieces.
    scores = [0.0] * (3 + 256) + [float(len(p)) for p in pieces]
    return tokens, scores, [int(t) for t in types]


def write(path, seed=0):
    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)
    first_piece = 3 + 256
    rng = np.random.default_rng(seed)

    def rand(*shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny-random-llama")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(n_vocab)

    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    # Dimension 0 of every embedding is large and the layers add little to it,
    # so after the final norm it is large and positive for any input.
    embd = rand(n_vocab, N_EMBD, std=1.0)
    embd[:, 0] = 4.0
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    # Pieces get random logits; specials and bytes get -30 times that dimension.
    output = rand(n_vocab, N_EMBD, std=0.3)
    output[:, 0] = 0.0
    output[:first_piece, :] = 0.0
    output[:first_piece, 0] = -30.0
    w.add_tensor("output.weight", output)
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", rand(N_EMBD, N_EMBD, std=0.1))
        w.add_tensor(p + "attn_k.weight", rand(N_EMBD, N_EMBD, std=0.1))
        w.add_tensor(p + "attn_v.weight", rand(N_EMBD, N_EMBD, std=0.1))
        w.add_tensor(p + "attn_output.weight", rand(N_EMBD, N_EMBD, std=0.02))
        w.add_tensor(p + "ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", rand(N_FF, N_EMBD, std=0.1))
        w.add_tensor(p + "ffn_up.weight", rand(N_FF, N_EMBD, std=0.1))
        w.add_tensor(p + "ffn_down.weight", rand(N_EMBD, N_FF, std=0.02))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the .gguf file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args()
    write(args.out, args.seed)


if __name__ == "__main__":
    main()
