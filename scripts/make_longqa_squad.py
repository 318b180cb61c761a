#!/usr/bin/env python3
"""Builds the long-document QA set of issue 6 from the SQuAD corpus QA data.

Each of the SQuAD articles in ../shared/data/eval/qa_squad (its paragraphs, in order, separated
by blank lines) becomes one document; every question is asked against the article its gold
paragraph belongs to. Output: JSON lines {"id", "document", "question", "answers", "title"} in
the long-document QA format of ../shared/data/README.md, read by `attnrag eval longqa`.

usage: make_longqa_squad.py [--data DIR] [--per-article N] OUT.jsonl
"""
import argparse
import collections
import json
import sys


def paragraph_key(pid):
    # "squad-3-12" -> ("squad-3", 12): article, then paragraph number.
    article, _, number = pid.rpartition("-")
    return article, int(number)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/eval/qa_squad", help="qa_squad folder")
    ap.add_argument("--per-article", type=int, default=0,
                    help="keep the first N questions of each article (0 = all)")
    ap.add_argument("out", help="output JSONL file")
    args = ap.parse_args()

    articles = collections.OrderedDict()
    titles = {}
    with open(f"{args.data}/corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            article, number = paragraph_key(p["_id"])
            articles.setdefault(article, []).append((number, p["text"]))
            titles.setdefault(article, p.get("title", ""))
    documents = {a: "\n\n".join(text for _, text in sorted(ps)) for a, ps in articles.items()}

    taken = collections.Counter()
    n = 0
    with open(f"{args.data}/questions.jsonl", encoding="utf-8") as f, \
            open(args.out, "w", encoding="utf-8") as out:
        for line in f:
            q = json.loads(line)
            if not q.get("answers") or not q.get("gold_passages"):
                continue
            article, _ = paragraph_key(q["gold_passages"][0])
            if article not in documents:
                sys.exit(f"{q['id']}: gold paragraph {q['gold_passages'][0]} is not in the corpus")
            if args.per_article and taken[article] >= args.per_article:
                continue
            taken[article] += 1
            out.write(json.dumps({"id": q["id"], "document": documents[article],
                                  "question": q["question"], "answers": q["answers"],
                                  "title": titles[article]}, ensure_ascii=False) + "\n")
            n += 1
    print(f"{n} questions over {len(taken)} articles -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
