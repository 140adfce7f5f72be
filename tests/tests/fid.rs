//! `ri fid of NAME` maps names exactly as the motr-shaped service does: the
//! service's own client (`m0client fid`) is the reference.

use std::process::Command;

use ri_tests::{fixture, ri};

#[test]
fn ri_fid_of_agrees_with_the_service() {
    for name in ["foo", "object-17", "a name with spaces", "é"] {
        let theirs = Command::new(fixture("m0client"))
            .args(["fid", name, "--devices", "3"])
            .output()
            .expect("run m0client fid");
        assert!(theirs.status.success());
        let theirs: serde_json::Value = serde_json::from_slice(&theirs.stdout).unwrap();
        let ours = ri(&["fid", "of", name, "--devices", "3", "--json"]);
        assert!(
            ours.status.success(),
            "{}",
            String::from_utf8_lossy(&ours.stderr)
        );
        let ours: serde_json::Value = serde_json::from_slice(&ours.stdout).unwrap();
        assert_eq!(ours["id"], theirs["id"], "{name}");
        assert_eq!(ours["fid"], theirs["fid"], "{name}");
        for (o, t) in ours["cobs"]
            .as_array()
            .unwrap()
            .iter()
            .zip(theirs["cobs"].as_array().unwrap())
        {
            assert_eq!(o["cob_fid"], t["cob_fid"], "{name}");
        }
        // Decoding a cob fid names its device and its object.
        let cob = theirs["cobs"][2]["cob_fid"].as_str().unwrap();
        let d = ri(&["fid", "decode", cob, "--json"]);
        let d: serde_json::Value = serde_json::from_slice(&d.stdout).unwrap();
        assert_eq!(d["device"], 2);
        assert_eq!(d["object"], theirs["fid"]);
    }
}
