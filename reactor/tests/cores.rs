//! A core outside the allowed CPU set is a clear error that names the set.

mod common;

use common::*;
use nvme_reactor::{AllowedCores, CoreError, CoreSpec, ReactorError, ReactorSet};

#[test]
fn a_disallowed_core_is_an_error_naming_the_allowed_set() {
    let allowed = AllowedCores::current().unwrap();
    let bad = allowed.cores().last().unwrap() + 1;
    let mut cfg = config(1);
    cfg.cores = CoreSpec::from_cores([bad]);
    let err = ReactorSet::<Dev>::start(cfg, vec![controller()]).unwrap_err();
    match &err {
        ReactorError::Cores(CoreError::NotAllowed { core, allowed: set }) => {
            assert_eq!(*core, bad);
            assert_eq!(set, &allowed.to_string());
        }
        other => panic!("wrong error: {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&bad.to_string()) && msg.contains(&allowed.to_string()),
        "{msg}"
    );
}

#[test]
fn several_reactors_may_share_a_core() {
    let allowed = AllowedCores::current().unwrap();
    let core = allowed.cores()[0];
    let mut cfg = config(1);
    cfg.cores = CoreSpec::parse(&format!("{core},{core},{core}")).unwrap();
    cfg.pin = true;
    let set = ReactorSet::start(cfg, vec![controller()]).unwrap();
    assert_eq!(set.cores(), vec![core; 3]);
    assert!(set.shutdown().is_clean());
}
