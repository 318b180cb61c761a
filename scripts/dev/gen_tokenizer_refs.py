# Dev tool: reference token ids for tests/unit/test_tokenizer.cpp from Hugging Face `tokenizers`.
#
# Not run by CI. It rebuilds SmolLM2's tokenizer from the GGUF's own vocabulary and merges with
# the pre-tokenizer of SmolLM2's tokenizer.json (Digits(individual_digits) then ByteLevel with the
# GPT-2 regex), so no tokenizer.json download is needed.
#
#   pip install gguf tokenizers jinja2 regex
#   python3 scripts/dev/gen_tokenizer_refs.py [MODEL.gguf [tinyshakespeare/input.txt]]
#       (run from the repository root; defaults: models/SmolLM2-135M-Instruct.Q4_1.gguf and
#       ../shared/data/niah/tinyshakespeare/input.txt) prints the C++ tables of reference
#       encodings and pre-tokenizer splits to paste into the test.
#   python3 scripts/dev/gen_tokenizer_refs.py MODEL --random N OUT.jsonl
#       writes N random strings with their reference ids (one JSON object a line), for
#       comparing the C++ encoder against the reference on many inputs during development.
import json
import random
import sys
import unicodedata

import jinja2
import regex
from gguf import GGUFReader
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

CASES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "12345 3.14",
    "I'm don't they'll we've she'd you're",
    "a  b\n\n  c",
    "\tindented\ttabs\t\there",
    "def main():\n    return x + 1  # comment\n",
    "I love \U0001F980 and \U0001F680! \U0001F468\u200D\U0001F469\u200D\U0001F467",
    "北京是中国的首都。",
    "Café naïve résumé Ærøskøbing",
    "Привет, мир! Как дела?",
    "   leading and trailing   ",
    "<|im_start|>user",
    "\u0663\u0664\u0665 \u00BD \u216B x\u00B2",
    "HELLO'S 'quoted' ''s it'S",
    "line1\r\nline2\r\n",
    "a\u00A0b\u2003c\u3000d \u0085e",
    "e\u0301 a\u0308 \u0915\u094D\u0937",
    "こんにちは 안녕하세요",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "  \n\t \n",
    "x\x04y \x1d",
    "Supercalifragilistic" * 6,
]

# Pre-tokenizer splits: SmolLM from tokenizers' own pre-tokenizer, the others from their regexes
# (as in the models' tokenizer.json files) with the `regex` module.
PRE_REGEX = {
    "gpt2": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}
PRE_CASES = [
    "Hello  world's 12345 x\n\n  y",
    "HE'LL 'Re \tfoo\r\n\r\n  bar!!\n  ",
    "a1b22c333d4444 \u00BD\u0663",
    "  \u3000\u00A0x \u2028?! \U0001F600.",
]

SPECIAL_CASES = [
    "<|im_start|>user\nHi there<|im_end|>\n",
    "<|endoftext|><|endoftext|>x<file_sep>",
    "a<|im_start|",
]


def read_vocab(path):
    r = GGUFReader(path)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def ints(key):
        f = r.fields[key]
        return [int(f.parts[i][0]) for i in f.data]

    def scalar(key):
        f = r.fields[key]
        return int(f.parts[f.data[0]][0])

    tmpl = bytes(r.fields["tokenizer.chat_template"].parts[r.fields["tokenizer.chat_template"].data[0]]).decode()
    return (strings("tokenizer.ggml.tokens"), ints("tokenizer.ggml.token_type"),
            strings("tokenizer.ggml.merges"), scalar("tokenizer.ggml.unknown_token_id"), tmpl)


def build(tokens, types, merges, unk_id, with_special):
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    bpe = models.BPE(vocab=vocab, merges=pairs, unk_token=tokens[unk_id], fuse_unk=False)
    tk = Tokenizer(bpe)
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tk.decoder = decoders.ByteLevel()
    if with_special:
        tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                               for t, ty in zip(tokens, types) if ty in (3, 4)])
    return tk


def cpp_string(s):
    """A C++ narrow string literal for s (UTF-8): visible characters as themselves, the rest as
    escapes (universal character names encode as UTF-8 in GCC's and Clang's narrow literals)."""
    out = []
    simple = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\"": "\\\"", "\\": "\\\\"}
    for i, c in enumerate(s):
        o = ord(c)
        if c in simple:
            out.append(simple[c])
        elif 0x20 <= o < 0x7F:
            out.append(c)
        elif o < 0xA0:  # C0/C1 controls may not be universal character names: UTF-8 bytes
            nxt = s[i + 1] if i + 1 < len(s) else ""
            out.append("".join("\\x%02X" % b for b in c.encode("utf-8")) +
                       ('""' if nxt and nxt in "0123456789abcdefABCDEF" else ""))
        elif unicodedata.category(c)[0] in "LNPS":
            out.append(c)
        elif o < 0x10000:
            out.append("\\u%04X" % o)
        else:
            out.append("\\U%08X" % o)
    return '"' + "".join(out) + '"'


def random_text(rng):
    ranges = [(0x20, 0x7E), (0x09, 0x0D), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF),
              (0x400, 0x4FF), (0x600, 0x6FF), (0x900, 0x97F), (0x2000, 0x206F), (0x3000, 0x30FF),
              (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF),
              (0x10000, 0x1034F), (0xE0000, 0xE007F), (0x100000, 0x10FFFD)]
    n = rng.randint(0, 40)
    out = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        cp = rng.randint(lo, hi)
        if 0xD800 <= cp <= 0xDFFF:
            continue
        out.append(chr(cp))
        if rng.random() < 0.2:
            out.append(rng.choice([" ", "  ", "\n", "'s", "'LL", "123", ".", "\r\n"]))
    return "".join(out)


def main():
    args = sys.argv[1:]
    path = args[0] if args else "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    tokens, types, merges, unk_id, tmpl = read_vocab(path)
    plain = build(tokens, types, merges, unk_id, with_special=False)
    special = build(tokens, types, merges, unk_id, with_special=True)

    if len(args) >= 4 and args[1] == "--random":
        rng = random.Random(1234)
        with open(args[3], "w", encoding="utf-8") as f:
            for _ in range(int(args[2])):
                s = random_text(rng)
                f.write(json.dumps({"text": s, "ids": plain.encode(s).ids}) + "\n")
        return

    print("// Generated by scripts/dev/gen_tokenizer_refs.py (HF tokenizers %s)." %
          __import__("tokenizers").__version__)
    print("const RefCase plain_cases[] = {")
    for s in CASES:
        ids = plain.encode(s).ids
        assert plain.decode(ids) == s or tokens[unk_id] in [tokens[i] for i in ids], s
        print("    {%s, {%s}}," % (cpp_string(s), ", ".join(map(str, ids))))
    print("};")
    print("const RefCase special_cases[] = {")
    for s in SPECIAL_CASES:
        print("    {%s, {%s}}," % (cpp_string(s), ", ".join(map(str, special.encode(s).ids))))
    print("};")
    print("const PreCase pre_cases[] = {")
    smollm = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                      pre_tokenizers.ByteLevel(add_prefix_space=False)])
    for text in PRE_CASES:
        for kind in ("smollm", "gpt2", "llama-bpe", "qwen2"):
            if kind == "smollm":
                words = [text[a:b] for _, (a, b) in smollm.pre_tokenize_str(text)]
            else:
                words = regex.findall(PRE_REGEX[kind], text)
            assert "".join(words) == text
            ends, pos = [], 0
            for w in words:
                pos += len(w.encode("utf-8"))
                ends.append(pos)
            print('    {"%s", %s, {%s}},' % (kind, cpp_string(text), ", ".join(map(str, ends))))
    print("};")
    env = jinja2.Environment()
    rendered = env.from_string(tmpl).render(
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True)
    print("// rendered chat: %s" % cpp_string(rendered))
    shakespeare = "../shared/data/niah/tinyshakespeare/input.txt"
    if len(args) >= 2:
        shakespeare = args[1]
    with open(shakespeare, encoding="utf-8") as f:
        ids = plain.encode(f.read()).ids
    h = 0xCBF29CE484222325  # FNV-1a over the ids
    for i in ids:
        h = ((h ^ i) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    print("// tinyshakespeare: %d tokens, FNV-1a 0x%016Xull" % (len(ids), h))
    print("const std::vector<TokenId> chat_ids = {%s};" %
          ", ".join(map(str, special.encode(rendered).ids)))


if __name__ == "__main__":
    main()
