import subprocess
import sys

import pytest

from sim.cli import main, parse_request


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_names_every_scenario(capsys):
    code, out, _ = run(["--list"], capsys)
    assert code == 0 and "fig6" in out and "swap" in out


def test_named_scenario_prints_steps_tables_and_free_counts(capsys):
    code, out, _ = run(["fig6"], capsys)
    assert code == 0
    assert "step 0: scheduled A(prefill 7); 7 tokens" in out
    assert "A seq 0: len 8  blocks g7(4) g1(3)" in out
    assert "free    gpu 6/8" in out
    assert "step 2:" in out and "g3(1)" in out


def test_custom_scenario_with_options(capsys):
    code, out, _ = run(["--block-size", "4", "--gpu-blocks", "10", "--cpu-blocks", "12",
                        "--request", "A:6:16", "--request", "B:3:6",
                        "--request", "C:5:10:n=2"], capsys)
    assert code == 0
    assert "swap out C" in out and "swap in C" in out
    assert "queues  waiting=[] running=['A'] swapped=['C']" in out


def test_bad_request_is_a_clear_error(capsys):
    code, _, err = run(["--request", "A:x:3"], capsys)
    assert code == 2 and "whole numbers" in err
    code, _, err = run(["--request", "A:3:3:color=red"], capsys)
    assert code == 2 and "must be one of" in err
    code, _, err = run(["nosuch"], capsys)
    assert code == 2 and "unknown scenario" in err


def test_vllm_swap_error_stops_the_run_with_its_message(capsys):
    code, out, _ = run(["--gpu-blocks", "10", "--cpu-blocks", "1", "--request", "A:6:16",
                        "--request", "B:3:6", "--request", "C:5:10:n=2"], capsys)
    assert code == 1 and "lack of CPU swap space" in out


def test_parse_request_options():
    r = parse_request("X:5:7:beam=3:arrival=2:output_len=4")
    assert (r.best_of, r.use_beam_search, r.arrival_step, r.output_len) == (3, True, 2, 4)


def test_python_dash_m_sim_runs():
    out = subprocess.run([sys.executable, "-m", "sim", "fig8"], capture_output=True,
                         text=True, check=True)
    assert "copy-on-write seq 0: block 1 -> 3" in out.stdout


# -- V1 (--engine v1) ---------------------------------------------------------------------
def test_v1_engine_prints_hits_block_tables_and_free_queue(capsys):
    code, out, _ = run(["--engine", "v1", "--block-size", "4", "--gpu-blocks", "11",
                        "--prefix", "8", "--request", "A:3:4",
                        "--request", "B:5:4:arrival=2", "--no-async-scheduling"], capsys)
    assert code == 0
    assert out.startswith("# custom (V1, vLLM v0.25.1)")
    assert "step 0: scheduled A(prefill 11); 11 tokens" in out
    assert "A seq 0: len 12  blocks g1(4)* g2(4)* g3(3)" in out
    assert "step 2: scheduled A(decode) B(prefill 5); 6 tokens" in out
    assert "- hit B: blocks 1,2 (8 tokens cached)" in out
    assert "free    gpu 7/11 (block 0 is the null block; 0 free blocks still cached)" in out
    assert "# prefix cache: 8 of 24 looked-up tokens hit" in out


def test_v1_engine_runs_the_async_loop_by_default(capsys):
    """vLLM's default loop: each step says whose output it processed and what is still in
    flight; a request's tokens in flight are counted beside its length; the token sampled
    after an EOS is discarded."""
    args = ["--engine", "v1", "--block-size", "4", "--gpu-blocks", "11",
            "--request", "A:5:3", "--request", "B:4:3:output_len=1"]
    code, out, _ = run(args, capsys)
    assert code == 0
    assert "step 0: scheduled A(prefill 5) B(prefill 4); 9 tokens\n" \
           "  async   processed no output; in flight: step 0" in out
    assert "A seq 0: len 5 (+1 in flight)  blocks g1(4)* g2(1)" in out
    assert "step 1: scheduled A(decode) B(decode); 2 tokens\n" \
           "  async   processed step 0's output; in flight: step 1" in out
    assert "- discard B's token 2 at position 5 (sampled by a step in flight; it is " \
           "finished stopped)" in out
    code, same, _ = run(args + ["--async-scheduling"], capsys)
    assert same == out
    code, sync, _ = run(args + ["--no-async-scheduling"], capsys)
    assert code == 0 and "async " not in sync and "discard" not in sync
    assert "step 1: scheduled A(decode); 1 token" in sync


def test_v1_engine_shows_preemption_and_eviction(capsys):
    code, out, _ = run(["--engine", "v1", "--block-size", "4", "--gpu-blocks", "8",
                        "--request", "A:8:6", "--request", "B:8:6", "--request", "C:8:6"],
                       capsys)
    assert code == 0
    assert "- preempt C by recompute (so that B gets a block for its next token)" in out
    assert "- evict block 6 (#" in out
    assert "- preempt B by recompute (nobody else is left to preempt)" in out


def test_v1_engine_runs_a_named_scenario_and_rejects_beam_search(capsys):
    code, out, _ = run(["--engine", "v1", "fig8"], capsys)
    assert code == 0 and "0_A seq 0" in out and "1_A seq 1" in out
    code, _, err = run(["--engine", "v1", "fig9"], capsys)
    assert code == 2 and "beam search" in err


def test_prefix_needs_the_v1_engine(capsys):
    code, _, err = run(["--prefix", "4", "--request", "A:3:3"], capsys)
    assert code == 2 and "--engine v1" in err
    code, _, err = run(["--engine", "v1"], capsys)
    assert code == 2 and "--request" in err


def test_python_dash_m_sim_runs_v1():
    out = subprocess.run([sys.executable, "-m", "sim", "--engine", "v1", "--request",
                          "A:5:2", "--request", "B:5:2:n=2"], capture_output=True, text=True,
                         check=True)
    assert "scheduled A(prefill 5) 0_B(prefill 5) 1_B(prefill 1)" in out.stdout


def test_no_arguments_prints_the_usage_and_what_to_give(capsys):
    code, out, err = run([], capsys)
    assert code == 2 and out == ""
    assert err.startswith("usage: python -m sim") and "A:6:12 is request A" in err
    assert err.rstrip().endswith("at least one --request")


def test_every_option_says_what_it_does(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for option in ("--block-size", "--gpu-blocks", "--cpu-blocks", "--watermark", "--seed",
                   "--max-num-seqs", "--max-num-batched-tokens", "--preemption-mode",
                   "--engine", "--prefix"):
        block = text.split(option, 1)[1].split("\n  -", 1)[0]
        assert len(block.split()) > 3, option          # a description, not a bare metavar
    assert "(default: 16)" in text and "ID:PROMPT_LEN:MAX_TOKENS[:key=value...]" in text


def test_one_token_and_one_block_are_singular(capsys):
    code, out, _ = run(["--request", "A:1:1"], capsys)
    assert code == 0 and "scheduled A(prefill 1); 1 token\n" in out and "1 tokens" not in out


def test_a_block_freed_in_its_own_step_was_shown_arriving(capsys):
    code, out, _ = run(["fig8"], capsys)
    step2 = out.split("step 2:")[1]
    assert "- new gpu blocks 2 (seq 0), 6 (seq 1)" in step2
    assert step2.index("new gpu blocks") < step2.index("free gpu blocks")


@pytest.mark.parametrize("text", ["A:6", "A:x:3", "A:\u0663:3", "A:6:3:colour=2"])
def test_a_bad_request_says_the_format(capsys, text):
    code, _, err = run(["--request", text], capsys)
    assert code == 2 and "error: request" in err


# -- V1 with a CPU tier (--cpu-offload-blocks) -----------------------------------------------
def test_v1_cpu_offload_blocks_store_then_load_a_preempted_request(capsys):
    code, out, _ = run(["--engine", "v1", "--gpu-blocks", "9", "--cpu-offload-blocks", "16",
                        "--request", "A:8:6", "--request", "B:8:6", "--request", "C:8:6"],
                       capsys)
    assert code == 0
    assert "- store job 2 for C: gpu 5,6 -> cpu 4,5" in out
    assert "- preempt C by recompute (nobody else is left to preempt)" in out
    assert "- flush job 2 (preempted)" in out
    assert "- load job 3 for C: 8 tokens after 0 cached on the GPU, cpu 4,5 -> gpu 5,6" in out
    assert "- C loaded: 8 tokens computed" in out
    assert "cpu     6/16 used c0#" in out
    assert "# CPU tier: 0 of 24 tokens looked up beyond the GPU hit were loaded (3 lookups); " \
           "after preemption 8 of 9" in out


def test_v1_cpu_offload_generated_blocks_and_bad_input(capsys):
    code, out, _ = run(["--engine", "v1", "--gpu-blocks", "9", "--cpu-offload-blocks", "16",
                        "--offload-generated", "--request", "A:8:6"], capsys)
    # the generated tokens' full block (positions 8-11) is stored too
    assert code == 0 and "store job 1 for A: gpu 3 -> cpu 2" in out
    code, _, err = run(["--engine", "v1", "--cpu-offload-blocks", "-1", "--request", "A:8:6"],
                       capsys)
    assert code == 2 and "--cpu-offload-blocks: a whole number" in err


def test_the_readme_cpu_offload_command_runs(capsys):
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if "--cpu-offload-blocks 16" in ln)
    code, out, _ = run(line.split("-m sim", 1)[1].split(), capsys)
    assert code == 0 and "load job 3 for C" in out


def test_v1_hybrid_model_prints_every_group_and_the_window(capsys):
    """The design doc's example: 1 full : 2 sliding (window 32), block size 16."""
    assert main(["--engine", "v1", "--block-size", "16", "--gpu-blocks", "18",
                 "--max-num-batched-tokens", "16", "--max-num-seqs", "4",
                 "--sliding-window", "32", "--sliding-per-full", "2", "--no-async-scheduling",
                 "--request", "A:112:4"]) == 0
    out = capsys.readouterr().out
    step3 = out[out.index("step 3:"):out.index("step 4:")]
    assert "G0 full: g1(16)* g4(16)* g7(16)* g10(16)*" in step3
    assert "G1 sliding 32: g0(0) g5(16)* g8(16)* g11(16)*" in step3
    assert "block 2 left A's G1 window (its block 0 is the null block now)" in step3
    assert "alloc A G2 block 3 -> gpu 12" in step3


def test_v1_model_preset_and_bad_hybrid_options(capsys):
    assert main(["--engine", "v1", "--model", "gpt-oss-20b", "--block-size", "16",
                 "--gpu-blocks", "30", "--request", "A:40:2"]) == 0
    out = capsys.readouterr().out
    assert "G0 sliding 128:" in out and "G1 full:" in out
    assert main(["--engine", "v1", "--model", "gpt-oss-20b", "--sliding-window", "8",
                 "--request", "A:4:2"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["--engine", "v1", "--model", "gpt-5", "--request", "A:4:2"]) == 2
    assert "unknown model 'gpt-5'" in capsys.readouterr().err
    assert main(["--engine", "v1", "--disable-hybrid-kv-cache-manager",
                 "--request", "A:4:2"]) == 2
    assert main(["--engine", "v1", "--model", "gpt-oss-20b", "--disable-hybrid-kv-cache-manager",
                 "--block-size", "16", "--gpu-blocks", "30", "--request", "A:40:2"]) == 0
    out = capsys.readouterr().out
    # vLLM's default loop: step 0's token is in flight when step 0 is printed.
    assert "G1" not in out and "A seq 0: len 40 (+1 in flight)  blocks g1(16)* g2(16)* g3(8)" in out
    assert main(["--engine", "v1", "--model", "gpt-oss-20b", "--block-size", "16",
                 "--gpu-blocks", "30", "--request", "A:40:2"]) == 0
    assert "A seq 0: len 40 (+1 in flight)\n    G0 sliding 128:" in capsys.readouterr().out


def test_disaggregated_run_prints_both_instances_and_the_link(capsys):
    code, out, _ = run(["--engine", "v1", "--disaggregated", "--block-size", "16",
                        "--gpu-blocks", "25", "--link", "ethernet-25g",
                        "--max-num-batched-tokens", "64", "--max-num-seqs", "16",
                        "--request", "A:96:4", "--request", "B:160:3:arrival=1",
                        "--request", "C:64:2:arrival=9"], capsys)
    assert code == 0
    assert "link Ethernet 25 Gb/s, 2,097,152 bytes per block" in out
    assert "  - A finished, blocks 1, 2, 3, 4, 5, 6 held" in out
    assert "skipped_waiting=['A']" in out and "held=['A']" in out
    assert "A: prefill blocks [1, 2, 3, 4, 5, 6] -> decode blocks [1, 2, 3, 4, 5, 6]" in out
    assert "  - A: finished_sending" in out and "  - A: finished_recving" in out
    assert "# A: done; read" in out and "4 tokens" in out


def test_disaggregated_abort_and_failed_read(capsys):
    code, out, _ = run(["--engine", "v1", "--disaggregated", "--gpu-blocks", "40",
                        "--block-size", "16", "--kv-load-failure-policy", "recompute",
                        "--request", "A:300:3:fail=1", "--request", "B:200:3:abort=0"],
                       capsys)
    assert code == 0
    assert "A: load failed" in out and "policy recompute" in out
    assert "# A: done" in out and "# B: aborted" in out


def test_disaggregated_bad_input_is_a_clear_error(capsys):
    code, _, err = run(["--engine", "v1", "--disaggregated", "--request", "A:9:3:soon=1"],
                       capsys)
    assert code == 2 and "arrival=MS, abort=MS or fail=1" in err
    code, _, err = run(["--engine", "v1", "--disaggregated", "fig6"], capsys)
    assert code == 2 and "takes --request arguments" in err
    code, _, err = run(["--disaggregated", "--request", "A:9:3"], capsys)
    assert code == 2 and "needs --engine v1" in err


def test_the_recompute_that_leaks_is_described():
    from sim.cli import describe_event
    from sim.events import BlocksLeaked, PrefillRunAsDecode
    assert describe_event(BlocksLeaked("A", (0, 1, 2), 1)) == (
        "leak blocks 0, 1, 2: allocate counted 1 finished sample of A in the ref count")
    assert describe_event(PrefillRunAsDecode("A", 1, 0, 9)) == (
        "run seq 1's recompute as a decode (first seq 0 finished): KV of position 9 only")
