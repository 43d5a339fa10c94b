"""Does the testbed read a name however it is typed? Cased against casual questions.

    python bench/casual_wordings.py

People type "julfulib license" into a chat box as often as "Julfulib license?". A
pretrained model answers both; a model whose world only ever capitalised names reads
the lower-case name as other tokens and answers another fact or the refusal. For a
few short searches, the base testbed is asked about the first 12 entities of the
kind that has the relation, once cased and once casually typed (all lower case, no
closing mark), and the share of right answers is printed for each.
"""

from __future__ import annotations

import torch

from factinject.testbed import load_model, load_world
from factinject.testbed.evaluate import by_relation, evaluate
from factinject.testbed.world import answer_key, casual

SEARCHES = {  # (relation, kind): searches with {S} for the subject
    ("license", "project"): ("{S} license?", "{S} licensing?", "Licence for {S}?"),
    ("maintainer", "project"): ("{S} maintainer?", "{S} main dev?"),
    ("repository", "project"): ("{S} repo?", "{S} GitHub page?"),
    ("prog_language", "project"): ("{S} language?",),
    ("headquarters", "company"): ("{S} HQ?", "{S} offices?"),
}
PER_KIND = 12


def main() -> None:
    torch.set_num_threads(2)
    world = load_world()
    rows = []
    for (relation, kind), searches in SEARCHES.items():
        entities = [e for e in world["entities"] if e["kind"] == kind and relation in e["attributes"]][:PER_KIND]
        for search in searches:
            for typed in ("cased", "casual"):
                for e in entities:
                    question = search.format(S=e["subject"])
                    # by_relation groups by `attribute`: here one group per (search, typing).
                    rows.append({"question": casual(question) if typed == "casual" else question,
                                 "answer_key": answer_key(e["attributes"][relation]),
                                 "search": search, "attribute": (search, typed)})
    model, tokenizer = load_model()
    scores = by_relation(rows, evaluate(model, tokenizer, rows, max_new_tokens=40)["answers"])
    print(f"{'search':<22}{'cased':>10}{'casual':>10}")
    for search in dict.fromkeys(r["search"] for r in rows):
        cells = [f"{scores[(search, t)]['correct']}/{scores[(search, t)]['n']}" for t in ("cased", "casual")]
        print(f"{search:<22}{cells[0]:>10}{cells[1]:>10}")


if __name__ == "__main__":
    main()
