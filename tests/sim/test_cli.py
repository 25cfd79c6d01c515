import subprocess
import sys


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
                        "--request", "B:5:4:arrival=2"], capsys)
    assert code == 0
    assert out.startswith("# custom (V1, vLLM v0.25.1)")
    assert "step 0: scheduled A(prefill 11); 11 tokens" in out
    assert "A seq 0: len 12  blocks g1(4)* g2(4)* g3(3)" in out
    assert "step 2: scheduled A(decode 1) B(prefill 5); 6 tokens" in out
    assert "- hit B: blocks 1,2 (8 tokens cached)" in out
    assert "free    gpu 7/11 (block 0 is the null block; 0 free blocks still cached)" in out
    assert "# prefix cache: 8 of 24 looked-up tokens hit" in out


def test_v1_engine_shows_preemption_and_eviction(capsys):
    code, out, _ = run(["--engine", "v1", "--block-size", "4", "--gpu-blocks", "8",
                        "--request", "A:8:6", "--request", "B:8:6", "--request", "C:8:6"],
                       capsys)
    assert code == 0
    assert "- preempt C by recompute (room for B)" in out
    assert "- evict block 6 (#" in out
    assert "- preempt B by recompute (room for B)" in out


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
