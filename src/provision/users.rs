//! Service-user lookups from `/etc/passwd` and `/etc/group`.
//!
//! No crate in the dependency tree resolves user names, and NSS (LDAP, systemd-homed) does not
//! matter here: the service account is a local system user created by `systemd-sysusers`
//! (systemd/relais.sysusers), which always lands in these two files.

use std::path::Path;

pub const PASSWD: &str = "/etc/passwd";
pub const GROUP: &str = "/etc/group";

/// A local account: its ids and every group it belongs to (primary first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The account `name` from the given files, or `None` when it does not exist or the files
/// cannot be read.
pub fn lookup_in(passwd: &Path, group: &Path, name: &str) -> Option<Account> {
    let passwd = std::fs::read_to_string(passwd).ok()?;
    let (uid, gid) = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            [user, _, uid, gid, ..] if *user == name => {
                Some((uid.parse::<u32>().ok()?, gid.parse::<u32>().ok()?))
            }
            _ => None,
        }
    })?;
    let mut groups = vec![gid];
    if let Ok(text) = std::fs::read_to_string(group) {
        for line in text.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if let [_, _, id, members] = fields.as_slice()
                && members.split(',').any(|m| m.trim() == name)
                && let Ok(id) = id.parse::<u32>()
                && !groups.contains(&id)
            {
                groups.push(id);
            }
        }
    }
    Some(Account {
        name: name.to_owned(),
        uid,
        gid,
        groups,
    })
}

/// The account `name` from the system's files.
pub fn lookup(name: &str) -> Option<Account> {
    lookup_in(Path::new(PASSWD), Path::new(GROUP), name)
}

/// The name of user `uid`, for messages.
pub fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string(PASSWD).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            [name, _, id, ..] if id.parse::<u32>().ok() == Some(uid) => Some((*name).to_owned()),
            _ => None,
        }
    })
}

/// The name of group `gid`, for messages.
pub fn group_name(gid: u32) -> Option<String> {
    let text = std::fs::read_to_string(GROUP).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            [name, _, id, ..] if id.parse::<u32>().ok() == Some(gid) => Some((*name).to_owned()),
            _ => None,
        }
    })
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether `account` may read (and, with `write`, write) a file with this owner and mode, by
/// the classic owner/group/other bits (root may do anything). ACLs are not considered: the
/// service's files and device nodes do not use them.
pub fn may_access(account: &Account, uid: u32, gid: u32, mode: u32, write: bool) -> bool {
    if account.uid == 0 {
        return true;
    }
    let need = if write { 0o6 } else { 0o4 };
    let bits = if account.uid == uid {
        (mode >> 6) & 0o7
    } else if account.groups.contains(&gid) {
        (mode >> 3) & 0o7
    } else {
        mode & 0o7
    };
    bits & need == need
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn an_account_is_found_with_its_supplementary_groups() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        let group = dir.path().join("group");
        std::fs::write(
            &passwd,
            "root:x:0:0:root:/root:/bin/bash\nrelais:x:998:997::/var/lib/relais:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(
            &group,
            "root:x:0:\ndialout:x:20:relais\ninput:x:105:someone,relais\nrelais:x:997:\n",
        )
        .unwrap();
        let account = lookup_in(&passwd, &group, "relais").unwrap();
        assert_eq!((account.uid, account.gid), (998, 997));
        assert_eq!(account.groups, vec![997, 20, 105]);
        assert!(lookup_in(&passwd, &group, "nobody-here").is_none());
    }

    #[test]
    fn access_follows_the_owner_group_and_other_bits() {
        let relais = Account {
            name: "relais".into(),
            uid: 998,
            gid: 997,
            groups: vec![997, 20],
        };
        // /dev/ttyACM0 root:dialout 0660: through the dialout group.
        assert!(may_access(&relais, 0, 20, 0o660, true));
        // root:root 0600: no.
        assert!(!may_access(&relais, 0, 0, 0o600, false));
        // Owned by relais, 0600.
        assert!(may_access(&relais, 998, 0, 0o600, true));
        // World-readable but not writable.
        assert!(may_access(&relais, 0, 0, 0o644, false));
        assert!(!may_access(&relais, 0, 0, 0o644, true));
    }
}
