use proptest::prelude::*;

use super::*;
use crate::config::FinegrainedTpConfig;

fn plan(dp: usize, tp: usize, pp: usize, size: usize) -> Plan {
    Plan::new(&ParallelConfig::new(dp, tp, pp, false, FinegrainedTpConfig::uniform(size)).unwrap())
}

#[test]
fn worked_examples_from_the_research() {
    let p = plan(16, 1, 1, 8);
    assert_eq!(p.component(Component::Mlp).groups, vec![(0..8).collect::<Vec<_>>(), (8..16).collect()]);
    assert_eq!(p.membership(Component::Mlp, 11), Some(Membership { group: 1, rank_in_group: 3 }));

    let p = plan(4, 2, 1, 2);
    assert_eq!(p.component(Component::LmHead).groups, vec![vec![0, 2], vec![1, 3], vec![4, 6], vec![5, 7]]);
    let p = plan(4, 2, 1, 4);
    assert_eq!(p.component(Component::LmHead).groups, vec![vec![0, 2, 4, 6], vec![1, 3, 5, 7]]);
}

#[test]
fn pipeline_stages_are_never_paired() {
    // DP=2, PP=2, TP=1: vLLM's rank = dp*2 + pp. vLLM-Ascend would pair [0,1] (the two stages
    // of replica 0); the right group pairs the same stage of the two replicas.
    let p = plan(2, 1, 2, 2);
    assert_eq!(p.component(Component::LmHead).groups, vec![vec![0, 2], vec![1, 3]]);
    for g in &p.component(Component::LmHead).groups {
        let stages: Vec<_> = g.iter().map(|&r| p.coord(r).pp).collect();
        assert!(stages.windows(2).all(|w| w[0] == w[1]), "{g:?} mixes stages");
    }
    // DP=4, PP=2, TP=2, size 2.
    let p = plan(4, 2, 2, 2);
    assert_eq!(p.component(Component::OProj).groups[..4], [vec![0, 4], vec![1, 5], vec![2, 6], vec![3, 7]]);
}

#[test]
fn display_is_compact() {
    let s = plan(16, 1, 1, 8).to_string();
    assert!(s.contains("mlp        size 8  : [0..7] [8..15]"), "{s}");
    let s = plan(4, 2, 1, 2).to_string();
    assert!(s.contains("[0,2] [1,3] [4,6] [5,7]"), "{s}");
}

fn valid_layout() -> impl Strategy<Value = (usize, usize, usize, [usize; 4])> {
    (1usize..=24, 1usize..=4, 1usize..=3).prop_flat_map(|(dp, tp, pp)| {
        let divisors: Vec<usize> = (1..=dp).filter(|s| dp % s == 0).collect();
        let pick = proptest::sample::select(divisors);
        (Just(dp), Just(tp), Just(pp), [pick.clone(), pick.clone(), pick.clone(), pick])
    })
}

proptest! {
    #[test]
    fn groups_partition_the_world((dp, tp, pp, sizes) in valid_layout()) {
        let fg = FinegrainedTpConfig { embedding: Some(sizes[0]), lm_head: Some(sizes[1]), o_proj: Some(sizes[2]), mlp: Some(sizes[3]) };
        let p = Plan::new(&ParallelConfig::new(dp, tp, pp, false, fg).unwrap());
        let world = dp * tp * pp;
        for cp in &p.components {
            let mut seen = vec![false; world];
            for (gi, g) in cp.groups.iter().enumerate() {
                prop_assert_eq!(g.len(), cp.size);
                for (ri, &r) in g.iter().enumerate() {
                    prop_assert!(!seen[r], "rank {} twice", r);
                    seen[r] = true;
                    prop_assert_eq!(p.membership(cp.component, r), Some(Membership { group: gi, rank_in_group: ri }));
                    let (c0, c) = (p.coord(g[0]), p.coord(r));
                    prop_assert_eq!((c.pp, c.tp), (c0.pp, c0.tp));
                    prop_assert_eq!(c.dp, c0.dp + ri);
                }
            }
            prop_assert!(seen.iter().all(|s| *s));
        }
    }

    #[test]
    fn invalid_sizes_always_error(dp in 1usize..=64, size in 0usize..=80) {
        let fg = FinegrainedTpConfig { mlp: Some(size), ..Default::default() };
        let r = ParallelConfig::new(dp, 1, 1, false, fg);
        prop_assert_eq!(r.is_ok(), size >= 1 && size <= dp && dp % size == 0);
    }

    #[test]
    fn additional_config_parser_never_panics(s in "\\PC{0,64}") {
        let _ = crate::config::AdditionalConfig::parse(&s);
    }

    #[test]
    fn finegrained_objects_never_panic(key in "[a-z_]{0,40}", v in prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:?}")),
        Just("null".to_string()), Just("[]".to_string()), Just("\"x\"".to_string()),
        Just("1e400".to_string()), Just("18446744073709551616".to_string()),
    ]) {
        let _ = crate::config::AdditionalConfig::parse(&format!(r#"{{"finegrained_tp_config":{{"{key}":{v}}}}}"#));
    }
}

/// Every rank's specs come in the one planned order, and the members of each group agree on
/// it: the same `(role, index)`, the same member list, and each member at its own position.
#[test]
fn group_specs_are_in_one_order_and_agree_across_members() {
    let t = std::time::Duration::from_secs(1);
    for (dp, tp, pp) in [(8, 1, 1), (4, 2, 1), (2, 2, 2)] {
        let p = Plan::new(&ParallelConfig::new(dp, tp, pp, false, FinegrainedTpConfig { embedding: Some(2), lm_head: Some(dp), ..Default::default() }).unwrap());
        let all: Vec<Vec<GroupSpec>> = (0..p.world_size()).map(|r| p.group_specs(r, t).unwrap()).collect();
        for (rank, specs) in all.iter().enumerate() {
            assert_eq!(specs.iter().map(|s| s.role).collect::<Vec<_>>(), GroupRole::PLANNED);
            for s in specs {
                assert_eq!(s.global_rank(), rank, "{s}");
                for (pos, &peer) in s.global_ranks.iter().enumerate() {
                    let theirs = all[peer].iter().find(|x| x.role == s.role).unwrap();
                    assert_eq!((theirs.index, &theirs.global_ranks, theirs.rank), (s.index, &s.global_ranks, pos), "{s} seen from {peer}");
                }
            }
            let dp_group = &specs[4];
            assert_eq!(dp_group.size(), dp);
            assert!(dp_group.global_ranks.iter().all(|&r| p.coord(r).tp == p.coord(rank).tp && p.coord(r).pp == p.coord(rank).pp));
            // The TP group: this replica's stage, every TP position in order.
            let tp_group = &specs[5];
            assert_eq!((tp_group.size(), tp_group.rank), (tp, p.coord(rank).tp));
            assert!(tp_group.global_ranks.iter().enumerate().all(|(i, &r)| {
                let c = p.coord(r);
                (c.dp, c.pp, c.tp) == (p.coord(rank).dp, p.coord(rank).pp, i)
            }));
        }
        assert!(p.group_specs(p.world_size(), t).is_none());
    }
}
