//! Users and groups from the container's own /etc/passwd and /etc/group.

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, Clone)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn passwd(root: &Path) -> Vec<PasswdEntry> {
    std::fs::read_to_string(root.join("etc/passwd"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry { name: f[0].into(), uid: f[2].parse().ok()?, gid: f[3].parse().ok()?, home: f[5].into() })
        })
        .collect()
}

fn groups(root: &Path) -> Vec<GroupEntry> {
    std::fs::read_to_string(root.join("etc/group"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].into(),
                gid: f[2].parse().ok()?,
                members: f[3].split(',').filter(|m| !m.is_empty()).map(str::to_string).collect(),
            })
        })
        .collect()
}

/// Resolves a group name or number.
pub fn resolve_group(root: &Path, g: &str) -> Result<u32, String> {
    gid_in(&groups(root), g)
}

/// A group name or number, looked up in /etc/group entries already read.
fn gid_in(all: &[GroupEntry], g: &str) -> Result<u32, String> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    all.iter().find(|e| e.name == g).map(|e| e.gid).ok_or_else(|| format!("no group {g:?} in the container's /etc/group"))
}

/// Resolves a user name or number.
pub fn resolve_user_id(root: &Path, u: &str) -> Result<u32, String> {
    if let Ok(n) = u.parse::<u32>() {
        return Ok(n);
    }
    passwd(root).into_iter().find(|e| e.name == u).map(|e| e.uid).ok_or_else(|| format!("no user {u:?} in the container's /etc/passwd"))
}

/// Resolves who a process runs as: `user` (name or uid, optionally `user:group`), an explicit `group`, and
/// additional groups; the user's supplementary groups from /etc/group are included as Docker does.
pub fn resolve(root: &Path, user: &str, group: &str, additional: &[String]) -> Result<Identity, String> {
    let (user, inline_group) = match user.split_once(':') {
        Some((u, g)) => (u, g),
        None => (user, ""),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entries = passwd(root);
    let entry = match user.parse::<u32>() {
        Ok(uid) => entries.iter().find(|e| e.uid == uid).cloned().or(Some(PasswdEntry {
            name: user.to_string(),
            uid,
            gid: 0,
            home: "/".into(),
        })),
        Err(_) => entries.iter().find(|e| e.name == user).cloned(),
    }
    .ok_or_else(|| format!("no user {user:?} in the container's /etc/passwd"))?;
    let group = if !group.is_empty() { group } else { inline_group };
    // One read of /etc/group (in a VM every read is a round trip to the host).
    let all = groups(root);
    let gid = if group.is_empty() { entry.gid } else { gid_in(&all, group)? };
    let mut gids: Vec<u32> = all.iter().filter(|g| g.members.iter().any(|m| *m == entry.name)).map(|g| g.gid).collect();
    for g in additional {
        gids.push(gid_in(&all, g)?);
    }
    gids.sort_unstable();
    gids.dedup();
    Ok(Identity { uid: entry.uid, gid, groups: gids, home: entry.home })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_numbers_and_groups() {
        let d = std::env::temp_dir().join(format!("hyperstart-users-{}", std::process::id()));
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(d.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n").unwrap();
        std::fs::write(d.join("etc/group"), "root:x:0:\napp:x:1000:\nstaff:x:50:app\ncdrom:x:24:\n").unwrap();
        let i = resolve(&d, "app", "", &["cdrom".into(), "8".into()]).unwrap();
        assert_eq!((i.uid, i.gid, i.home.as_str()), (1000, 1000, "/home/app"));
        assert_eq!(i.groups, vec![8, 24, 50]);
        assert_eq!(resolve(&d, "", "", &[]).unwrap().uid, 0);
        assert_eq!(resolve(&d, "1000:staff", "", &[]).unwrap().gid, 50);
        assert_eq!(resolve(&d, "4242", "", &[]).unwrap().uid, 4242);
        assert!(resolve(&d, "nobody-here", "", &[]).unwrap_err().contains("no user"));
        assert!(resolve(&d, "app", "nogroup", &[]).unwrap_err().contains("no group"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
