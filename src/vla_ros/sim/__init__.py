"""MuJoCo closed loop: worlds, scenarios, success rules, experts and the evaluation harness."""
