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
