"""The batched evaluator and the SB3 vector env agree exactly with the single env."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from env_fixtures import make_dataset
from interestgym.agents.rules import make_baseline
from interestgym.envs.policies import ConstantPolicy, ModelPolicy
from interestgym.envs.replay import InterestReplayEnv
from interestgym.envs.replay_data import ProtocolSpec, load_replay_data
from interestgym.envs.vector import InterestReplayVecEnv, evaluate_policy

from interestgym.core.features import FEATURE_NAMES
from interestgym.core.interest import ScoringConfig
from interestgym.core.metrics import DEFAULT_METRICS


def two_profile_ema():
    """Fixed strengths a_L 0.1, a_S 0.5, w 0.5 (the tuned-rule family, untuned)."""
    return make_baseline("ema_two_profile", long_rate=0.1, short_rate=0.5, short_weight=0.5)

BAYES_CTX = ConstantPolicy(0.3, 0.8, 0.4, 0.0, name="bayes_ctx",
                           scoring=ScoringConfig(popularity_weight=0.2, beta_cat=0.5, category_forgetting=0.9, beta_ctx=0.3))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vector")
    return {
        # 150 items: the 99 sampled negatives are a real random draw
        "next_positive": make_dataset(root / "np", seed=4, n_users=30, n_items=150),
        "impressions": make_dataset(root / "imp", seed=5, n_users=30, impressions=True),
    }


def single_env_replay(path: Path, policy, split: str) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    env = InterestReplayEnv(path, split=split, scoring=policy.scoring)
    dec_rows, pt_rows, feats = [], [], []
    for user in env.data.user_ids:
        obs, _ = env.reset(options={"user_id": user})
        while True:
            feats.append(obs)
            obs, reward, terminated, truncated, info = env.step(policy.act(obs[None])[0])
            dec_rows.append({"user_id": user, "decision": info["decision"], "reward": reward, "scored": info["scored"],
                             **{m: info["metrics"].get(m, np.nan) for m in DEFAULT_METRICS},
                             "strengths": tuple(info["strengths"])})
            for k, idx in enumerate(info["points"].index):
                pt_rows.append({"user_id": user, "point_key": env.data.point_key[idx],
                                **{m: info["points"].metrics[m][k] for m in DEFAULT_METRICS}})
            if terminated or truncated:
                break
    return pd.DataFrame(dec_rows), pd.DataFrame(pt_rows), np.array(feats)


@pytest.mark.parametrize("kind", ["next_positive", "impressions"])
@pytest.mark.parametrize("policy", [two_profile_ema(), make_baseline("mean_history"), make_baseline("always_replace"), BAYES_CTX], ids=lambda p: p.name)
def test_batched_evaluator_equals_the_single_env_exactly(datasets, kind, policy):
    decisions, points, feats = single_env_replay(datasets[kind], policy, split="valid")
    for batch_size in (1, 4, 1024):
        res = evaluate_policy(datasets[kind], policy, split="valid", batch_size=batch_size, progress=False)
        assert len(res.decisions) == len(decisions) and len(res.points) == len(points) > 0
        assert res.decisions["user_id"].tolist() == decisions["user_id"].tolist()
        assert res.decisions["decision"].tolist() == decisions["decision"].tolist()
        assert res.decisions["scored"].tolist() == decisions["scored"].tolist()
        for m in DEFAULT_METRICS:
            # exact equality, NaN for unscored steps in both
            assert np.array_equal(res.decisions[m].to_numpy(), decisions[m].to_numpy(), equal_nan=True), m
            assert np.array_equal(res.points[m].to_numpy(), points[m].to_numpy()), m
        rewards = np.where(decisions["scored"], decisions["reward"], np.nan)
        assert np.array_equal(res.decisions["reward"].to_numpy(), rewards, equal_nan=True)
        assert res.points["point_key"].tolist() == points["point_key"].tolist()
        assert np.array_equal(res.features, feats)
        strengths = res.decisions[["long_strength", "short_strength", "short_weight", "popularity_weight"]].to_numpy()
        assert np.array_equal(strengths, np.array(decisions["strengths"].tolist()))


def test_evaluation_result_format(datasets):
    res = evaluate_policy(datasets["impressions"], two_profile_ema(), split="test", progress=False)
    assert list(res.points.columns) == ["user_id", "point_key", "repeat", "decision", *DEFAULT_METRICS]
    assert {"user_id", "decision", "ts", "scored", "n_points", "reward", "long_strength"} <= set(res.decisions.columns)
    assert res.features.shape == (len(res.decisions), len(FEATURE_NAMES))
    assert res.decisions["n_points"].sum() == len(res.points) == res.protocol["scoring_points"]
    per_user = res.per_user()
    assert per_user.index.is_unique and set(per_user.index) == set(res.points["user_id"])
    summary = res.summary()
    assert summary["auc"]["mean_over_points"] == pytest.approx(res.points["auc"].mean())
    assert summary["auc"]["mean_over_users"] == pytest.approx(res.points.groupby("user_id")["auc"].mean().mean())
    some = list(res.decisions["user_id"].unique()[:2])
    sub = evaluate_policy(datasets["impressions"], two_profile_ema(), split="test", users=some, progress=False)
    assert set(sub.decisions["user_id"]) == set(some)
    pd.testing.assert_frame_equal(sub.points.reset_index(drop=True),
                                  res.points[res.points["user_id"].isin(some)].reset_index(drop=True))


def test_every_policy_sees_the_same_candidates(datasets):
    a = load_replay_data(datasets["next_positive"], None, ProtocolSpec(split="test"))
    b = load_replay_data(datasets["next_positive"], None, ProtocolSpec(split="test"))
    assert a is b  # cached per (dataset, embeddings, protocol)
    from interestgym.envs.replay_data import build_replay_data

    from interestgym.data.dataset import Dataset

    c = build_replay_data(Dataset.open(datasets["next_positive"]), None, ProtocolSpec(split="test"))
    assert np.array_equal(a.point_candidates, c.point_candidates) and np.array_equal(a.point_offsets, c.point_offsets)
    d = build_replay_data(Dataset.open(datasets["next_positive"]), None, ProtocolSpec(split="test", seed=1))
    assert not np.array_equal(a.point_candidates, d.point_candidates)


def test_vector_env_follows_sb3_conventions_and_matches_the_single_env(datasets):
    path = datasets["impressions"]
    policy = ConstantPolicy(0.3, 0.9, 0.5, 0.1)
    venv = InterestReplayVecEnv(path, n_envs=3, seed=0)
    venv.seed(7)
    obs = venv.reset()
    assert obs.shape == (3, len(FEATURE_NAMES)) and obs.dtype == np.float32
    users = [info["user_id"] for info in venv.reset_infos]
    rewards: list[list[float]] = [[], [], []]
    first_obs = [obs[i] for i in range(3)]
    finished = []
    single = InterestReplayEnv(path, split="train")
    for _ in range(150):
        obs, rew, dones, infos = venv.step(policy.act(obs))
        assert venv.observation_space.contains(obs[0])
        for i in range(3):
            rewards[i].append(float(rew[i]))
            if dones[i]:
                assert "terminal_observation" in infos[i] and infos[i]["TimeLimit.truncated"] is False
                assert infos[i]["user_id"] == users[i]
                finished.append((users[i], rewards[i], first_obs[i]))
                users[i] = venv.current_user_ids[i]
                rewards[i] = []
                first_obs[i] = obs[i]
                # the returned observation is the new user's first one
                assert np.array_equal(obs[i], single.reset(options={"user_id": users[i]})[0])
    assert len(finished) >= 3
    for user, rs, o0 in finished:
        obs_s, _ = single.reset(options={"user_id": user})
        assert np.array_equal(obs_s, o0)
        want = []
        while True:
            obs_s, r, term, trunc, _ = single.step(policy.act(obs_s[None])[0])
            want.append(np.float32(r))
            if term or trunc:
                break
        assert rs == [float(w) for w in want]


def test_vector_env_refuses_actions_that_are_not_one_row_per_env(datasets):
    from interestgym.errors import InterestGymError

    data = load_replay_data(datasets["next_positive"], None, ProtocolSpec(split="train", n_negatives=20))
    venv = InterestReplayVecEnv(data, n_envs=3, seed=0)
    venv.reset()
    for bad in (np.zeros(12), np.zeros((3, 5)), np.zeros((4, 3))):
        with pytest.raises(InterestGymError, match=re.escape(f"actions of shape {bad.shape}: expected (3, 4)")):
            venv.step_async(bad)
    venv.step_async(np.zeros((3, 4), np.float32))  # the right shape is taken
    venv.step_wait()
    # the arguments both envs take are checked alike (they passed in silence here: max_events=0 truncated every step)
    for kwargs, message in (({"max_events": 0}, r"max_events=0: expected None or an integer >= 1"),
                            ({"reward_baseline": 3}, r"reward_baseline=3: expected None or a rule"),
                            ({"reward_baseline": "rule"}, r"reward_baseline='rule': baseline rule 'rule': expected one of"),
                            ({"residual_to": {"name": "ema", "params": {"speed": 1}}}, r"residual_to=.*parameter\(s\) speed: not parameters"),
                            ({"scoring": ("beta_cat", 1)}, r"scoring=\('beta_cat', 1\): expected None")):
        with pytest.raises(InterestGymError, match=message):
            InterestReplayVecEnv(data, n_envs=3, **kwargs)
    # and both take a rule by name or as {"name", "params"}, a scoring as a dict of its fields (JSON, as gym.make's spec holds)
    by_json = InterestReplayVecEnv(data, n_envs=3, residual_to={"name": "bayesian_category", "params": {"beta_cat": 0.5}},
                                   reward_baseline="mean_history")
    assert by_json.residual.scoring.beta_cat == 0.5 and by_json.reward_baseline.name == "mean_history"
    assert InterestReplayVecEnv(data, n_envs=3, scoring={"beta_cat": 1.0}).scoring == ScoringConfig(beta_cat=1.0)


def test_vector_env_truncation_and_reference_rule(datasets):
    venv = InterestReplayVecEnv(datasets["next_positive"], n_envs=2, seed=1, max_events=2, reward_baseline=two_profile_ema())
    obs = venv.reset()
    policy = two_profile_ema()
    obs, rew, dones, infos = venv.step(policy.act(obs))
    assert np.all(rew == 0)  # same rule as reference
    obs, rew, dones, infos = venv.step(policy.act(obs))
    assert dones.all()
    for info in infos:
        u = list(venv.data.user_ids).index(info["user_id"])
        n_decisions = venv.data.user_decision_end[u] - venv.data.user_decision_start[u]
        assert info["TimeLimit.truncated"] == (n_decisions > 2)
        assert info["terminal_observation"].shape == (len(FEATURE_NAMES),)


def test_the_reward_is_the_agents_metric_minus_the_reference_rules_on_the_same_points(datasets):
    """Two envs of one seed replay the same users in lock-step: one where the agent acts with a constant policy and the
    reward subtracts the reference rule, one where the rule itself acts with no baseline. At every scored step the
    first's reward is its own metric minus the second's metric (the rule's, on the same scoring points)."""
    agent = ConstantPolicy(0.9, 0.1, 0.9, 0.0, name="agent")
    rule = two_profile_ema()
    with_ref = InterestReplayVecEnv(datasets["next_positive"], n_envs=3, seed=4, reward_baseline=rule)
    alone = InterestReplayVecEnv(datasets["next_positive"], n_envs=3, seed=4)
    obs_a, obs_r = with_ref.reset(), alone.reset()
    checked = 0
    for _ in range(60):
        assert with_ref.current_user_ids == alone.current_user_ids
        obs_a, rew, _, infos = with_ref.step(agent.act(obs_a))
        obs_r, _, _, infos_r = alone.step(rule.act(obs_r))
        for r, info, info_r in zip(rew, infos, infos_r):
            assert info["scored"] == info_r["scored"]
            if info["scored"]:
                assert r == pytest.approx(info["metric"] - info_r["metric"], abs=1e-6)
                checked += int(info["metric"] != info_r["metric"])
    assert checked >= 3  # the two policies rank differently at some of the points compared


def test_ppo_trains_on_the_vector_env_and_evaluates_through_the_adapter(datasets, tmp_path, monkeypatch):
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "sb3"))  # SB3 otherwise leaves a folder in /tmp
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(InterestReplayVecEnv(datasets["next_positive"], n_envs=4, seed=0))
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0, verbose=0)
    model.learn(total_timesteps=128)
    policy = ModelPolicy(model, obs_transform=venv.normalize_obs)
    res = evaluate_policy(datasets["next_positive"], policy, split="test", progress=False)
    assert len(res.decisions) > 0 and res.decisions["long_strength"].between(0, 1).all()


def test_tied_category_forgetting_is_one_minus_the_long_strength(datasets):
    """category_forgetting=None forgets with 1 - a_L: with a constant a_L = 0.25 it equals the fixed 0.75."""
    def run(forgetting):
        policy = ConstantPolicy(0.25, 0.8, 0.4, 0.0, name="bayes",
                                scoring=ScoringConfig(popularity_weight=0.2, beta_cat=2.0, category_forgetting=forgetting))
        return evaluate_policy(datasets["impressions"], policy, split="valid", progress=False).points["ndcg@10"].to_numpy()

    tied = run(None)
    assert np.array_equal(tied, run(0.75))
    assert not np.array_equal(tied, run(1.0))  # the forgetting matters on this fixture


@pytest.mark.parametrize("block", [1, 3, 7])
def test_stepping_in_blocks_of_slots_changes_nothing(datasets, monkeypatch, block):
    """The vector env steps its slots in blocks (vector.step_block, for the cache): observations, rewards,
    dones and infos are those of one step of every slot, agent and reference rows alike."""
    from interestgym.envs import vector

    reference = make_baseline("bayesian_category", beta_cat=1.0, forgetting=0.9, long_rate=0.2, short_rate=0.7,
                              short_weight=0.4, popularity_weight=0.1)

    venv_dim = load_replay_data(datasets["impressions"], None, ProtocolSpec(split="train")).dim

    def trajectory(step_block):
        monkeypatch.setattr(vector, "STEP_BLOCK_VALUES", step_block * venv_dim)
        venv = InterestReplayVecEnv(datasets["impressions"], n_envs=10, seed=2, reward_baseline=reference,
                                    residual_to=reference, gain_lever=True)
        rng = np.random.default_rng(0)
        out = [venv.reset()]
        for _ in range(25):
            obs, rew, dones, infos = venv.step(rng.uniform(-0.5, 0.5, (10, venv.action_space.shape[0])).astype(np.float32))
            out += [obs, rew, dones.astype(np.float64), np.array([i.get("metric", np.nan) for i in infos]),
                    np.array([i["count_gain"] for i in infos]), np.stack([i["strengths"] for i in infos])]
        return out

    whole, blocked = trajectory(10_000), trajectory(block)
    assert vector.step_block(venv_dim) == block
    for a, b in zip(whole, blocked):
        np.testing.assert_array_equal(a, b)


def test_a_truncated_users_last_observation_is_its_true_next_state(datasets):
    """Cut off by max_events, a user still has a next decision: the observation returned (single env) and the
    terminal_observation (vector env) are that decision's, as an env without the limit shows it after the same
    steps (not the placeholder of a user whose log ended)."""
    data = load_replay_data(datasets["next_positive"], None, ProtocolSpec(split="train"))
    counts = data.user_decision_end - data.user_decision_start
    user = str(data.user_ids[int(np.argmax(counts > 3))])
    actions = [np.array([0.3, -0.2, 0.5, -0.8], np.float32), np.array([-0.6, 0.4, 0.1, -0.9], np.float32)]
    free = InterestReplayEnv(datasets["next_positive"], split="train")
    cut = InterestReplayEnv(datasets["next_positive"], split="train", max_events=2)
    free.reset(options={"user_id": user})
    cut.reset(options={"user_id": user})
    for a in actions:
        expected, *_ = free.step(a)
        got, _, terminated, truncated, _ = cut.step(a)
    assert truncated and not terminated
    np.testing.assert_array_equal(got, expected)

    long_users = {str(u) for u, n in zip(data.user_ids, counts) if n > 2}
    for seed in range(50):  # a seed whose slot starts with a user the limit cuts off
        venv = InterestReplayVecEnv(datasets["next_positive"], n_envs=1, seed=seed, split="train", max_events=2)
        venv.reset()
        if venv.current_user_ids[0] in long_users:
            break
    free.reset(options={"user_id": venv.current_user_ids[0]})
    for a in actions:
        expected, *_ = free.step(a)
        _, _, dones, infos = venv.step(a[None])
    assert dones[0] and infos[0]["TimeLimit.truncated"]
    np.testing.assert_array_equal(infos[0]["terminal_observation"], expected)


@pytest.mark.parametrize("kind", ["next_positive", "impressions"])
def test_the_gymnasium_vector_env_reports_what_the_sb3_vector_env_does(datasets, kind):
    """Both vector envs report one step of the same engine (``InterestReplayVecEnv._advance``): driven with the same
    seed and actions, the Gymnasium one's observations, rewards, terminated / truncated split, metrics, strengths,
    final observations and users are the SB3 one's list of info dicts, value for value."""
    from interestgym.envs.gym_vector import InterestReplayVectorEnv

    kwargs = {"split": "train", "max_events": 3}  # users both end and are cut off within the run
    sb3 = InterestReplayVecEnv(datasets[kind], n_envs=5, seed=4, **kwargs)
    gym_env = InterestReplayVectorEnv(num_envs=5, dataset=datasets[kind], **kwargs)
    np.testing.assert_array_equal(sb3.reset(), gym_env.reset(seed=4)[0])
    rng = np.random.default_rng(1)
    seen = {"terminated": 0, "truncated": 0}
    for _ in range(30):
        actions = rng.uniform(-1, 1, (5, 4)).astype(np.float32)
        users_before = sb3.current_user_ids
        obs, rewards, dones, infos = sb3.step(actions)
        g_obs, g_rewards, terminated, truncated, info = gym_env.step(actions)
        np.testing.assert_array_equal(obs, g_obs)
        np.testing.assert_array_equal(rewards, g_rewards.astype(np.float32))
        assert (terminated | truncated).tolist() == dones.tolist()
        assert truncated.tolist() == [bool(i.get("TimeLimit.truncated", False)) for i in infos]
        assert info["scored"].tolist() == [i["scored"] for i in infos]
        np.testing.assert_array_equal(info["metric"], [i.get("metric", np.nan) for i in infos])
        np.testing.assert_array_equal(info["strengths"], np.stack([i["strengths"] for i in infos]))
        assert list(info["user_id"]) == sb3.current_user_ids
        for k in np.flatnonzero(dones):
            np.testing.assert_array_equal(info["final_obs"][k], infos[k]["terminal_observation"])
            assert info["final_info"]["user_id"][k] == infos[k]["user_id"] == users_before[k]
        if dones.any():
            assert info["_final_obs"].tolist() == dones.tolist()
        seen["terminated"] += int(terminated.sum())
        seen["truncated"] += int(truncated.sum())
    assert seen["terminated"] > 0 and seen["truncated"] > 0


def test_gymnasium_sync_vector_env_batches_the_single_envs_infos(datasets):
    """``gymnasium.make_vec(..., vectorization_mode="sync")`` stacks each info value across envs; a step's scoring
    points come as one object (their count changes from step to step), so episodes end and restart without error,
    and each env's points are the single env's own."""
    import gymnasium as gym

    import interestgym  # noqa: F401  (registers the env)

    envs = gym.make_vec("interestgym/InterestReplay-v0", num_envs=3, vectorization_mode="sync",
                        dataset=str(datasets["impressions"]), split="train")
    single = InterestReplayEnv(datasets["impressions"], split="train")
    envs.reset(seed=3)
    first_user = envs.envs[0].unwrapped._user_id
    single.reset(options={"user_id": first_user})
    rng = np.random.default_rng(0)
    ended, compared = 0, 0
    for _ in range(60):
        actions = rng.uniform(-1, 1, (3, 4)).astype(np.float32)
        _, _, terminated, truncated, info = envs.step(actions)
        if ended == 0 and info["_points"][0]:
            # env 0 is still on its first user: the same points and metrics as the single env stepped alike
            _, _, _, _, own = single.step(actions[0])
            got = info["points"][0]
            assert np.array_equal(got.index, own["points"].index) and len(got) == own["n_points"]
            assert all(np.array_equal(got.metrics[m], own["points"].metrics[m]) for m in own["points"].metrics)
            compared += 1
        ended += int(terminated[0] or truncated[0]) if ended == 0 else int((terminated | truncated).sum())
    assert ended > 1 and compared > 0


def test_sb3_vector_env_refuses_per_slot_options_and_attributes(datasets):
    """The slots share one engine: a user asked for one slot, or an attribute for some slots, cannot be honoured,
    and is refused rather than silently dropped or applied to every slot."""
    from interestgym.errors import InterestGymError

    venv = InterestReplayVecEnv(datasets["impressions"], n_envs=3, seed=0)
    venv.set_options({"user_id": str(venv.data.user_ids[0])})
    with pytest.raises(InterestGymError, match=r"reset options \{'user_id': .*\(set_options\): this vector env takes none"):
        venv.reset()
    venv.reset()  # refused once, the options are gone: the next reset draws as usual
    with pytest.raises(InterestGymError, match=r"set_attr\('max_events', indices=\[0\]\): the 3 slots .* expected every slot"):
        venv.set_attr("max_events", 3, indices=[0])
    assert venv.max_events is None
    venv.set_attr("max_events", 3)
    venv.set_attr("max_events", 4, indices=[0, 1, 2])
    assert venv.max_events == 4


def test_next_step_autoreset_replays_what_same_step_does_one_step_later(datasets):
    """``autoreset_mode="next_step"``: a slot whose user ended returns that user's last observation (SAME_STEP's
    final_obs); at the next step it ignores its action and returns the next user's first observation (SAME_STEP's
    observation at the ending step) with reward 0; every other step is SAME_STEP's, value for value."""
    from gymnasium.vector import AutoresetMode
    from interestgym.envs.gym_vector import InterestReplayVectorEnv

    kwargs = {"dataset": datasets["next_positive"], "split": "train", "max_events": 4}
    same = InterestReplayVectorEnv(num_envs=1, **kwargs)
    nxt = InterestReplayVectorEnv(num_envs=1, autoreset_mode="next_step", **kwargs)
    assert nxt.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP and same.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    np.testing.assert_array_equal(same.reset(seed=5)[0], nxt.reset(seed=5)[0])
    rng = np.random.default_rng(2)
    restarts = 0
    for _ in range(40):
        action = rng.uniform(-1, 1, (1, 4)).astype(np.float32)
        obs, reward, terminated, truncated, info = same.step(action)
        n_obs, n_reward, n_term, n_trunc, n_info = nxt.step(action)
        assert (n_reward[0], n_term[0], n_trunc[0]) == (reward[0], terminated[0], truncated[0])
        np.testing.assert_array_equal(n_info["strengths"], info["strengths"])
        if terminated[0] or truncated[0]:
            np.testing.assert_array_equal(n_obs[0], info["final_obs"][0])
            assert n_info["user_id"][0] == info["final_info"]["user_id"][0]
            # the restart step: the action is ignored (a wild one changes nothing), nothing is scored
            r_obs, r_reward, r_term, r_trunc, r_info = nxt.step(np.full((1, 4), 9.0, np.float32).clip(-1, 1))
            np.testing.assert_array_equal(r_obs, obs)
            assert (r_reward[0], r_term[0], r_trunc[0], bool(r_info["scored"][0])) == (0.0, False, False, False)
            assert np.isnan(r_info["strengths"]).all() and r_info["user_id"][0] == info["user_id"][0]
            restarts += 1
        else:
            np.testing.assert_array_equal(n_obs, obs)
    assert restarts >= 2


def test_gymnasium_vector_observation_wrappers_run_on_the_next_step_mode(datasets):
    import gymnasium as gym

    import interestgym  # noqa: F401  (registers the env)

    envs = gym.make_vec("interestgym/InterestReplay-v0", num_envs=3, vectorization_mode="vector_entry_point",
                        autoreset_mode="next_step", dataset=str(datasets["impressions"]), split="train")
    envs = gym.wrappers.vector.NormalizeObservation(envs)
    envs.reset(seed=0)
    ended = 0
    for _ in range(30):
        obs, _, terminated, truncated, _ = envs.step(envs.action_space.sample())
        assert np.isfinite(obs).all()
        ended += int((terminated | truncated).sum())
    assert ended > 0
    from interestgym.envs.gym_vector import InterestReplayVectorEnv

    from interestgym.errors import InterestGymError

    with pytest.raises(InterestGymError, match=r"autoreset_mode='disabled': expected 'same_step' or 'next_step'"):
        InterestReplayVectorEnv(num_envs=2, autoreset_mode="disabled", dataset=datasets["impressions"])


def test_engine_rows_given_negative_or_as_a_pair_mean_what_numpy_indexing_means(datasets):
    """The engine reads one or two consecutive rows through slices (the single env's fast path); a negative row keeps
    numpy's meaning (the last row), as it had before that path, and a pair moves exactly its two rows."""
    from interestgym.envs.engine import ReplayEngine

    data = load_replay_data(datasets["impressions"], None, ProtocolSpec(split="train"))
    action = np.array([[0.3, -0.2, 0.1, -0.5]], dtype=np.float32)

    def engine() -> ReplayEngine:
        e = ReplayEngine(data, 3)
        e.start(np.arange(3), np.arange(3))
        return e

    fields = ("long_term", "short_term", "shadow", "drift_ema", "reward_ema", "long_metric_ema", "cursor")
    by_negative, by_index, by_fancy = engine(), engine(), engine()
    assert np.array_equal(by_negative.observe(np.array([-1])), by_index.observe(np.array([2])))
    by_negative.step(np.array([-1]), action)
    by_index.step(np.array([2]), action)
    for name in fields:
        assert np.array_equal(getattr(by_negative, name), getattr(by_index, name)), name
    assert by_negative.cursor[2] == data.user_decision_start[2] + 1 and (by_negative.long_term[:2] == 0).all()
    pair, each = engine(), engine()
    pair.step(np.array([0, 1]), np.repeat(action, 2, axis=0))
    each.step(np.array([0]), action)
    each.step(np.array([1]), action)
    for name in fields:
        assert np.array_equal(getattr(pair, name), getattr(each, name)), name
    assert (pair.long_term[2] == 0).all()
    # rows that are no run (a fancy index, not a slice) move exactly those rows, as one at a time does
    apart = engine()
    by_fancy.step(np.array([2, 0]), np.repeat(action, 2, axis=0))
    apart.step(np.array([2]), action)
    apart.step(np.array([0]), action)
    for name in fields:
        assert np.array_equal(getattr(by_fancy, name), getattr(apart, name)), name
    assert (by_fancy.long_term[1] == 0).all() and (by_fancy.long_term[[0, 2]] != 0).any()
