"""The "Disaggregated prefill and decode" page (docs/disaggregated-prefill-decode.md): vLLM
V1 (v0.25.1) with NIXL's KV connector on a prefill GPU and a decode GPU.

pd-step     the two GPUs side by side, one row per step of either (scenario.py, view.py,
            narration.py): a request computed and held on the prefill side, its blocks read
            over the link, freed there, decoded on the other side; both sides' queues,
            WAITING_FOR_REMOTE_KVS included.
pd-latency  long prompts and short answers on H200s (latency.py): time to first token and
            the longest gap between tokens per request, colocated V1 on one and two GPUs
            against one prefill and one decode GPU, with the link as a setting.
"""
from __future__ import annotations

from pages.framework.widget import Widget
from pages.questions import Asker, pd
from pages.topics.disaggregated import latency, narration, scenario, view

STEP_QUESTIONS = Asker(("pd-remote", pd.remote_wait), ("pd-landed", pd.landed),
                       ("pd-hold", pd.held))
LATENCY_QUESTIONS = Asker(("pd-gap", pd.steadiest_tokens), ("pd-ttft", pd.soonest_first_token))

WIDGETS = (
    Widget(
        id="pd-step",
        goal=("Follow one request's KV from the prefill GPU to the decode GPU, and say when "
              "each side's blocks are allocated, filled and freed."),
        title="Prefill and decode GPUs, step by step",
        summary="Each row is one step of either GPU. A block fills with its request's colour "
                "as its KV is computed (prefill GPU) or lands over the link (decode GPU); a "
                "dashed outline is a finished request whose blocks are kept for the "
                "transfer.",
        params=scenario.PARAMS,
        scenario=scenario.scenario, context=scenario.context, check=scenario.check,
        view=view.view, narrate=narration.narrate, label=view.label,
        details=narration.details, keys=("blk", "chip", "col", "xfer"),
        questions=STEP_QUESTIONS, question_kinds=STEP_QUESTIONS.kinds,
    ),
    Widget(
        id="pd-latency",
        goal=("Say when disaggregation wins (steady time between tokens) and what it costs "
              "(the transfer in the time to first token, one GPU for every prompt)."),
        title="Colocated or disaggregated: first token and gaps between tokens",
        summary="Twelve long documents with short answers. Each row is one request: when its "
                "first token came, and the longest wait between two of its tokens, on one "
                "colocated GPU, two colocated GPUs, and one prefill plus one decode GPU.",
        params=latency.PARAMS,
        scenario=latency.scenario, view=latency.view, narrate=latency.narrate,
        details=latency.details, keys=("row", "dot"),
        questions=LATENCY_QUESTIONS, question_kinds=LATENCY_QUESTIONS.kinds,
    ),
)
