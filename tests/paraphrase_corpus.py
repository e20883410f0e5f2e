"""A corpus with known answers for semantic dedup: paraphrases that must go, near-misses that stay.

Every *base* document is 5 sentences built from templates ("frames") of local-news topics, whose
words come with synonyms (``{approved|passed|backed}``) and whose facts are slots (a town, a
person, numbers).
For each base there is, with a larger id:

- a **paraphrase** (must be removed), one of four kinds:
  ``reorder`` (sentences shuffled), ``synonym`` (most words with alternatives swapped and
  clauses reworded), ``boilerplate`` (different site header and footer, about as long as the
  text) and ``mixed`` (all three at once);
- a **near-miss** (must survive), one of two kinds: ``shared_sentences`` (another article that
  repeats two of the base's sentences word for word, then says other things) and
  ``other_facts`` (the same five sentence frames about a different town, person and numbers: a
  different event reported in the same words; the hardest case for any dedup).

Plus unrelated single documents. Deterministic for a seed.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from curator_stages.tasks import DocumentBatch

TOWNS = ["Ashford", "Brookvale", "Carrow", "Dunmore", "Eastwick", "Fairhaven", "Glenrock",
         "Harlow", "Ivybridge", "Kestrel Bay", "Lindfield", "Marston", "Northam", "Oakridge",
         "Pembury", "Queensferry", "Redcliff", "Stanmore", "Thornbury", "Upton"]
PEOPLE = ["Maria Lopez", "James Okafor", "Chen Wei", "Anna Kowalski", "David Mensah",
          "Sofia Rossi", "Tom Becker", "Priya Nair", "Lars Holm", "Fatima Haddad",
          "Hugo Martin", "Elena Petrova", "Kenji Sato", "Grace Mwangi", "Omar Farouk"]

# Each topic: sentence templates. {a|b|c}: the base text uses the first choice, a synonym
# paraphrase another. {TOWN} {PERSON} {N1} {N2} {YEAR}: facts.
TOPICS: dict[str, list[str]] = {
    "council": [
        "The {TOWN} town council {approved|passed|backed} a {plan|proposal|scheme} to {build|construct|put up} {N1} new {homes|houses|dwellings} near the {old|former|disused} railway {station|depot}.",
        "Councillor {PERSON} {said|stated|told reporters} the {project|development|scheme} would {cost|require|need} about {N2} million pounds over {three|several} years.",
        "{Residents|Locals|People living nearby} {raised|voiced|expressed} {concerns|worries|fears} about {traffic|congestion|road safety} on the {narrow|small} {roads|streets} around the {site|area}.",
        "The {vote|decision|ballot} {followed|came after} a {public consultation|period of consultation} that {drew|attracted|received} more than {N1} {responses|replies|submissions}.",
        "{Work|Construction|Building} is {expected|due|planned} to {begin|start|get under way} in the spring of {YEAR}.",
        "A {spokesperson|representative} for the council {added|noted} that a {new|fresh} {bus route|bus service} would {link|connect} the {homes|estate} to the town centre.",
        "{Opponents|Critics} {argued|claimed|said} the {land|site} should {instead|rather} be {kept|preserved|used} as a {park|green space}.",
        "The {final|last} {plans|designs} will be {published|released|made public} on the council {website|web site} next month.",
    ],
    "football": [
        "{PERSON} {scored|netted|struck} twice as {TOWN} United {beat|defeated|overcame} their {rivals|opponents} {N1} to one on Saturday.",
        "The {home|local} side {dominated|controlled|ran} the {first half|opening half} and {deserved|earned|merited} their {lead|advantage} at the break.",
        "{Attendance|The crowd|The gate} of {N2} hundred was the {largest|biggest|highest} of the season at the {ground|stadium}.",
        "The {manager|coach|head coach} {praised|applauded|commended} the {team's|squad's|players'} {spirit|attitude|determination} after a {difficult|tough|hard} run of {results|games|matches}.",
        "A {late|last-minute|closing} {penalty|spot kick} {sealed|secured|clinched} the {win|victory|three points} in {stoppage|added|injury} time.",
        "The {result|win|victory} {lifts|moves|takes} the club to {N1}th place in the {table|league|standings}.",
        "{Injuries|Fitness problems} to two {defenders|centre backs} {left|forced} the {coach|manager} to {change|alter|reshape} the {back line|defence} before kick-off.",
        "{Next|Coming} weekend the {team|club|side} {travels|goes|heads} away to face the league {leaders|frontrunners} in {YEAR} {form|shape}.",
    ],
    "bakery": [
        "A {new|recently opened} bakery in {TOWN} {run|owned|operated} by {PERSON} {sells|offers} {sourdough|rye bread} made with {flour|grain} from a {local|nearby} mill.",
        "The {loaves|breads} are {baked|made|prepared} {overnight|through the night} and {sold out|gone} by {ten|mid-morning} most {days|mornings}.",
        "{PERSON} {trained|learned the trade|studied} in {Paris|France} for {N1} years before {returning|coming back|moving back} home.",
        "The {shop|bakery|business} {employs|has|hires} {N1} {staff|people|workers} and {plans|intends|hopes} to open a {second|another} {branch|shop} in {YEAR}.",
        "{Customers|Regulars|Shoppers} {queue|line up|wait} {outside|on the pavement} {early|at dawn} on {Saturdays|weekends}.",
        "{Prices|Costs} {start|begin} at {N2} pounds for a {small|little} {loaf|bread}.",
        "The {owner|baker} {said|explained|noted} that {rising|higher|increasing} {energy|electricity} {bills|costs} were the {biggest|main|greatest} {challenge|problem|worry}.",
        "{Pastries|Cakes|Croissants} are {also|as well} {available|on sale|sold} at the {weekend|Saturday} market.",
    ],
    "flood": [
        "{Heavy|Intense|Torrential} rain {caused|led to|brought} {flooding|floods} in {TOWN} on {Tuesday|Tuesday night}, {closing|shutting|blocking} {N1} {roads|streets}.",
        "{Emergency services|Rescue teams|Firefighters} {evacuated|moved|helped} {N2} {residents|people|households} from {homes|houses} near the river.",
        "The river {rose|climbed|went up} {N1} {metres|meters} above its {normal|usual|typical} level {overnight|during the night}.",
        "{PERSON}, who {lives|has lived} on the {riverside|river bank} for {decades|many years}, {said|told us} the water {had never|never had} {come|reached} so {high|far}.",
        "The {local authority|council} {opened|set up} a {rest centre|shelter|temporary shelter} in the {school|primary school} {hall|gym}.",
        "{Forecasters|Meteorologists|Weather experts} {warned|cautioned|said} that more rain {is expected|is forecast|will fall} {later|this} week.",
        "{Insurers|Insurance companies} {estimate|expect|believe} the {damage|cost of damage} {could|may|might} {reach|exceed|top} {N2} million pounds.",
        "{Flood defences|Flood barriers} {built|constructed|put up} in {YEAR} {held|survived|stood firm} in the town centre.",
    ],
    "library": [
        "The {TOWN} public library will {reopen|open again} on Monday after a {N1}-month {renovation|refurbishment|makeover}.",
        "The {work|project|refit} {added|created|brought} a {children's|kids'} {reading room|area|corner} and {N1} {new|additional|extra} computers.",
        "{Head librarian|Chief librarian|Library manager} {PERSON} {said|explained} that {visitor numbers|visits|footfall} had {doubled|grown|risen sharply} since {YEAR}.",
        "The {building|library} {dates from|was built in|first opened in} {YEAR} and is {listed|protected} for its {architecture|design|facade}.",
        "{Opening hours|Hours} will be {extended|longer|increased} to {eight|8} pm on {weekdays|working days}.",
        "{Funding|Money|The budget} of {N2} hundred thousand pounds {came|was provided|arrived} from a {national|government} {grant|fund}.",
        "{Volunteers|Helpers|Local volunteers} will {run|lead|host} {free|weekly} {reading groups|book clubs} for {adults|grown-ups} and {teenagers|teens}.",
        "The {library|branch} {also|further} {lends|loans|offers} {tools|equipment} and {musical instruments|instruments}.",
    ],
    "hospital": [
        "A {new|modern} {wing|ward|unit} at {TOWN} {General|District} Hospital will {add|provide|create} {N1} {beds|places} for {older|elderly} {patients|people}.",
        "{Hospital chief|The chief executive|The director} {PERSON} {said|stated} {waiting times|waits} in the {emergency department|A and E|casualty unit} had {fallen|dropped|come down} by {N1} per cent.",
        "The {unit|wing} {cost|was built for|required} {N2} million pounds and {took|needed|lasted} {two|2} years to {build|complete|finish}.",
        "{Nurses|Nursing staff|Staff} {welcomed|praised|applauded} the {extra|additional} {space|room|capacity} but {warned|said|cautioned} that {staffing|recruitment} {remains|is still|stays} a {problem|concern|challenge}.",
        "{Patients|Visitors} will be able to {park|leave their cars} {free|for free|without charge} for the first {hour|two hours}.",
        "The {hospital|trust} {plans|intends|aims} to {recruit|hire|employ} {N1} more {nurses|nursing staff} by {YEAR}.",
        "A {garden|courtyard garden} {designed|planned|created} by {local|nearby} {schoolchildren|pupils} {surrounds|borders|sits beside} the {entrance|main entrance}.",
        "The {official|formal} {opening|launch} is {planned|scheduled|set} for {June|early June}.",
    ],
    "festival": [
        "The {TOWN} {music|folk} festival {returns|comes back} this {summer|July} with {N1} {acts|bands|performers} on {three|several} {stages|outdoor stages}.",
        "{Organiser|Festival director|Organizer} {PERSON} {said|revealed|announced} that {tickets|passes} {sold out|were gone|went} in {N1} {hours|days}.",
        "The {event|festival} {began|started} in {YEAR} as a {small|modest|tiny} {gathering|get-together} in a {pub|local pub} {garden|yard}.",
        "{This year|For the first time}, {children|kids} under {twelve|12} {go|get in|enter} {free|for free|at no charge}.",
        "{Local|Nearby} {food stalls|traders|vendors} will {serve|sell|offer} {dishes|food|meals} from {N1} {countries|nations}.",
        "{Shuttle buses|Buses|Special buses} will {run|operate|go} from the {station|railway station} every {twenty|20} minutes.",
        "{Last|Previous} year the festival {raised|collected|made} {N2} thousand pounds for {charity|local charities|good causes}.",
        "{Residents|Neighbours|People nearby} have been {promised|assured|told} that {music|the noise|amplified music} will {stop|end|finish} at {eleven|11} pm.",
    ],
    "bridge": [
        "The {old|historic} {stone|iron} bridge in {TOWN} will {close|shut} for {repairs|maintenance|restoration} for {N1} {weeks|months}.",
        "{Engineers|Inspectors|Surveyors} {found|discovered|detected} {cracks|damage|weaknesses} in the {arches|supports|main arch} during a {routine|regular|scheduled} {inspection|check}.",
        "{Drivers|Motorists|Road users} {face|will face|must take} a {diversion|detour} of {N1} {miles|kilometres} {through|via} the {ring road|bypass}.",
        "The {repairs|works|project} {will cost|are expected to cost|are costed at} {N2} hundred thousand pounds.",
        "{Pedestrians|People on foot|Walkers} will {still|continue to} be {able|allowed} to {cross|use the bridge} on a {temporary|narrow} {walkway|footpath}.",
        "{PERSON}, {who runs|owner of} a {cafe|coffee shop} {next to|beside|near} the bridge, {fears|worries|is afraid} {trade|business|custom} will {suffer|fall|drop}.",
        "The bridge was {built|constructed|erected} in {YEAR} and {carries|takes|handles} {N2} thousand {vehicles|cars} a day.",
        "{Council|Highways} {officers|officials} {said|promised|pledged} the {work|repairs} would {finish|be completed|end} before {Christmas|the winter}.",
    ],
}

BOILERPLATE = [
    ("Home | News | Local | Sport | Weather | Contact us | Subscribe for 1 pound a week. "
     "Posted by the newsroom. Share this article on social media. Reading time 2 minutes.",
     "Copyright 2024 Local Media Group Ltd. All rights reserved. Registered in England. "
     "Terms and conditions apply. Cookie policy. Privacy notice. Advertise with us."),
    ("BREAKING: sign up to our free daily newsletter and never miss a story. Menu Search "
     "Log in Register. Filed under community updates. Last updated this morning.",
     "Comments are closed on this article. Related stories: more from our region, most read "
     "this week, editor's picks. Follow us for the latest headlines. Report an error."),
    ("Skip to main content. Your local paper since 1902. Print edition available in shops. "
     "Advertisement. Story continues below this advert.",
     "This story was produced with support from our readers. Support independent local "
     "journalism: donate today. Get in touch with tips and pictures. Back to top."),
]

#: Word-level synonyms for the ``synonym`` paraphrase: meaning-preserving swaps only (the
#: ``{a|b}`` alternatives in the frames are not all synonyms, so paraphrases do not use them).
SYNONYMS = {
    "approved": "passed", "plan": "proposal", "build": "construct", "homes": "houses",
    "said": "stated", "project": "scheme", "cost": "be priced at", "about": "roughly",
    "Residents": "Locals", "concerns": "worries", "roads": "streets",
    "followed": "came after", "drew": "attracted", "responses": "replies",
    "expected": "due", "begin": "start", "spokesperson": "representative", "added": "noted",
    "link": "connect", "Opponents": "Critics", "argued": "claimed", "published": "released",
    "scored": "netted", "beat": "defeated", "rivals": "opponents", "dominated": "controlled",
    "deserved": "earned", "largest": "biggest", "manager": "coach", "praised": "commended",
    "difficult": "tough", "sealed": "secured", "win": "victory", "lifts": "moves",
    "new": "newly opened", "sells": "offers", "loaves": "breads", "baked": "made",
    "trained": "studied", "returning": "coming back", "employs": "has", "staff": "workers",
    "plans": "intends", "Customers": "Shoppers", "queue": "line up", "start": "begin",
    "rising": "increasing", "biggest": "greatest", "challenge": "problem",
    "Heavy": "Torrential", "caused": "led to", "flooding": "floods", "closing": "shutting",
    "evacuated": "moved", "rose": "climbed", "normal": "usual", "overnight": "during the night",
    "opened": "set up", "warned": "cautioned", "estimate": "believe", "damage": "harm",
    "reopen": "open again", "renovation": "refurbishment", "doubled": "risen sharply",
    "extended": "lengthened", "Funding": "Money", "Volunteers": "Helpers", "run": "lead",
    "also": "as well", "lends": "loans", "patients": "people", "fallen": "dropped",
    "welcomed": "applauded", "extra": "additional", "problem": "concern", "recruit": "hire",
    "designed": "created", "surrounds": "borders", "official": "formal", "planned": "scheduled",
    "returns": "comes back", "tickets": "passes", "began": "started", "small": "modest",
    "serve": "offer", "raised": "collected", "promised": "assured", "stop": "end",
    "close": "shut", "repairs": "maintenance", "found": "discovered", "routine": "regular",
    "inspection": "check", "Drivers": "Motorists", "diversion": "detour",
    "Pedestrians": "Walkers", "fears": "worries", "trade": "business", "built": "constructed",
    "carries": "handles", "finish": "be completed",
}
_WORD = re.compile(r"[A-Za-z]+")

PARAPHRASE_KINDS = ("reorder", "synonym", "boilerplate", "mixed")
NEAR_MISS_KINDS = ("shared_sentences", "same_topic")
#: Reported apart: the same frames about other facts (see the module docstring).
TEMPLATED = "templated"
_CHOICE = re.compile(r"\{([^{}]*\|[^{}]*)\}")


@dataclass
class ParaphraseCorpus:
    docs: list[dict[str, str]] = field(default_factory=list)
    #: id of each paraphrase -> (id of its base, kind): the rows semantic dedup must remove.
    paraphrases: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: id of each near-miss -> (id of its base, kind): rows that must survive.
    near_misses: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: id of each templated document -> id of its base: reported, not scored (no right answer).
    templated: dict[str, str] = field(default_factory=dict)

    def table(self) -> pa.Table:
        return pa.table({"id": [d["id"] for d in self.docs], "text": [d["text"] for d in self.docs]})

    def tasks(self, docs_per_task: int = 64) -> list[DocumentBatch]:
        table = self.table()
        return [DocumentBatch(task_id=f"para-{i // docs_per_task}", dataset_name="paraphrase",
                              data=table.slice(i, docs_per_task))
                for i in range(0, table.num_rows, docs_per_task)]

    def score(self, removed: set[str]) -> dict[str, float]:
        """Precision and recall of a set of removed ids, overall and per kind.

        Templated documents are left out of precision and reported as ``removed.templated``.
        """
        templated = {d for d in removed if d in self.templated}
        removed = removed - templated
        true_pos = [d for d in removed if d in self.paraphrases]
        out: dict[str, float] = {
            "removed": len(removed),
            "precision": len(true_pos) / len(removed) if removed else 1.0,
            "recall": len(true_pos) / len(self.paraphrases),
        }
        for kind in PARAPHRASE_KINDS:
            ids = [d for d, (_, k) in self.paraphrases.items() if k == kind]
            out[f"recall.{kind}"] = sum(d in removed for d in ids) / len(ids)
        for kind in NEAR_MISS_KINDS:
            ids = [d for d, (_, k) in self.near_misses.items() if k == kind]
            out[f"survived.{kind}"] = sum(d not in removed for d in ids) / len(ids)
        out["removed.templated"] = len(templated) / max(len(self.templated), 1)
        return out


def _facts(rng: random.Random) -> dict[str, str]:
    return {"TOWN": rng.choice(TOWNS), "PERSON": rng.choice(PEOPLE), "N1": str(rng.randint(3, 60)),
            "N2": str(rng.randint(2, 90)), "YEAR": str(rng.randint(1890, 2023))}


def _render(template: str, facts: dict[str, str]) -> str:
    """Fill a frame with its first wording and the facts."""
    text = _CHOICE.sub(lambda m: m.group(1).split("|")[0], template)
    for slot, value in facts.items():
        text = text.replace("{" + slot + "}", value)
    return text


def synonym_swap(text: str) -> str:
    """Every word with an entry in :data:`SYNONYMS` replaced (meaning kept, shingles broken)."""
    return _WORD.sub(lambda m: SYNONYMS.get(m.group(0), m.group(0)), text)


def _other_facts(rng: random.Random, facts: dict[str, str]) -> dict[str, str]:
    while True:
        other = _facts(rng)
        if all(other[k] != facts[k] for k in facts):
            return other


def make_paraphrase_corpus(n_base: int = 80, n_single: int = 40, n_templated: int = 20,
                           seed: int = 7) -> ParaphraseCorpus:
    """``n_base`` bases with one paraphrase and one near-miss each, singles, templated docs.

    A base has 3 frames of one topic and 2 of others, with one set of facts. Ids sort base <
    near-miss < paraphrase, so the base is the one every dedup keeps.
    """
    rng = random.Random(seed)
    corpus = ParaphraseCorpus()
    topics = sorted(TOPICS)
    frames = [(topic, t) for topic in topics for t in TOPICS[topic]]
    by_topic = {topic: [i for i, (tp, _) in enumerate(frames) if tp == topic] for topic in topics}
    for i in range(n_base):
        topic = topics[i % len(topics)]
        own = rng.sample(by_topic[topic], 3)
        chosen = own + rng.sample([j for j in range(len(frames)) if frames[j][0] != topic], 2)
        facts = _facts(rng)
        base_sentences = [_render(frames[j][1], facts) for j in chosen]
        base_id, near_id, para_id = f"p{i:04d}a", f"p{i:04d}b", f"p{i:04d}c"
        corpus.docs.append({"id": base_id, "text": " ".join(base_sentences)})

        near_kind = NEAR_MISS_KINDS[i % len(NEAR_MISS_KINDS)]
        other = _other_facts(rng, facts)
        unused = [j for j in range(len(frames)) if j not in chosen]
        if near_kind == "shared_sentences":
            # Another article that repeats two of the base's sentences word for word.
            near = base_sentences[:2] + [_render(frames[j][1], other)
                                         for j in rng.sample(unused, 3)]
        else:  # the same topic, other sentences, other facts
            same = [j for j in by_topic[topic] if j not in chosen]
            rest = [j for j in unused if frames[j][0] != topic]
            near = [_render(frames[j][1], other)
                    for j in rng.sample(same, min(3, len(same))) + rng.sample(rest, 2)]
        corpus.docs.append({"id": near_id, "text": " ".join(near)})
        corpus.near_misses[near_id] = (base_id, near_kind)

        kind = PARAPHRASE_KINDS[(i // len(NEAR_MISS_KINDS)) % len(PARAPHRASE_KINDS)]
        head, foot = BOILERPLATE[i % len(BOILERPLATE)]
        if kind == "reorder":
            sentences = list(base_sentences)
            while sentences == base_sentences:
                rng.shuffle(sentences)
            text = " ".join(sentences)
        elif kind == "synonym":
            text = synonym_swap(" ".join(base_sentences))
        elif kind == "boilerplate":
            text = f"{head} {' '.join(base_sentences)} {foot}"
        else:
            sentences = [synonym_swap(s) for s in base_sentences]
            rng.shuffle(sentences)
            text = f"{head} {' '.join(sentences)} {foot}"
        corpus.docs.append({"id": para_id, "text": text})
        corpus.paraphrases[para_id] = (base_id, kind)

        if i < n_templated:  # the same frames about another town, person and numbers
            corpus.docs.append({"id": f"p{i:04d}t", "text": " ".join(
                _render(frames[j][1], _other_facts(rng, facts)) for j in chosen)})
            corpus.templated[f"p{i:04d}t"] = base_id

    single_rng = random.Random(seed + 1)
    for i in range(n_single):
        facts = _facts(single_rng)
        js = single_rng.sample(range(len(frames)), 4)
        corpus.docs.append({"id": f"s{i:04d}", "text": " ".join(
            _render(frames[j][1], facts) for j in js)})
    return corpus


#: The corpus the model tests embed: small enough for the CPU suite (150 documents).
TEST_CORPUS = {"n_base": 40, "n_single": 20, "n_templated": 10}


@functools.lru_cache(maxsize=2)
def embedded_test_corpus() -> tuple[ParaphraseCorpus, tuple[DocumentBatch, ...], Any]:
    """(corpus, its tasks with an ``embedding`` column, the set-up EmbeddingStage).

    Cached per process, so the test modules that need the real model load it once.
    """
    from curator_stages.models import EmbeddingStage

    corpus = make_paraphrase_corpus(**TEST_CORPUS)
    stage = EmbeddingStage(device="cpu", cpus=2)
    stage.setup()
    tasks = tuple(out for task in corpus.tasks(docs_per_task=50) for out in stage.run([task]))
    return corpus, tasks, stage
