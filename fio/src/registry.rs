//! Controllers shared by the fio jobs of one process: the first job that
//! names a controller opens and brings it up (through nvme-trid, as every
//! tool does); every other job (and thread) naming it gets the same one;
//! the last to let go shuts it down.

#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex, Weak};

use nvme_engine::ControllerOptions;
use nvme_trid::{AnyDevice, ControllerId, OpenOptions, Opened, Syntax};

use crate::error::{EngineError, chain};
use crate::filename::controller_key;

/// One brought-up controller: `ctrl`, its `description`
/// (`emulated (RAM, ...)` or `PCIe 0000:04:00.0 (vfio-pci)`) and whether
/// reads return no data (`null_data`: verify cannot pass).
pub type Shared = Opened<AnyDevice>;

static OPEN: Mutex<Vec<(String, Weak<Shared>)>> = Mutex::new(Vec::new());

/// The controller `spec` names, opened on first use.
pub fn get(spec: &ControllerId) -> Result<Arc<Shared>, EngineError> {
    let key = controller_key(spec);
    // Held while opening: two threads naming one controller must not both
    // bring it up. A poisoned lock only means another job panicked while
    // holding it; the list itself is still consistent.
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    open.retain(|(_, w)| w.strong_count() > 0);
    if let Some(shared) = open
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(shared);
    }
    let mut opts = OpenOptions::new(Syntax::FioFilename);
    // Queue pairs are created per fio thread; ask for many.
    opts.controller = ControllerOptions::default().with_io_queues(1024);
    let shared = nvme_trid::open(spec, &opts).map_err(|err| EngineError::Open {
        reason: chain(&err),
    })?;
    let shared = Arc::new(shared);
    open.push((key, Arc::downgrade(&shared)));
    Ok(shared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filename::parse;

    #[test]
    fn jobs_naming_one_controller_share_it_until_the_last_lets_go() {
        let spec = parse("trtype=emu size=4M mode=inline").unwrap().controller;
        let a = get(&spec).unwrap();
        let b = get(&spec).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let other = get(&parse("trtype=emu size=8M mode=inline").unwrap().controller).unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(weak.upgrade().is_none(), "the last job's drop closes it");
        let c = get(&spec).unwrap();
        assert_eq!(c.ctrl.namespaces().len(), 1);
    }

    #[test]
    fn an_emulated_controller_that_cannot_be_created_says_why() {
        let spec = parse("trtype=emu size=4M mode=inline file=/nonexistent-dir/x.img")
            .unwrap()
            .controller;
        let e = get(&spec).err().unwrap().to_string();
        assert!(
            e.contains("cannot create the emulated controller") && e.contains("/nonexistent-dir"),
            "{e}"
        );
    }
}
