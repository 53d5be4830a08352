//! Who a container's process runs as and which program it runs, from the container's own root filesystem:
//! users and groups from its /etc/passwd and /etc/group, the program from its `$PATH`.
//!
//! The lookups go through [`RootFs`], so the same rules apply wherever they run: inside the container (the agent,
//! after pivot_root) or on the host over a container's assembled root (the daemon, for a VM, where each file
//! access from the guest is a round trip to the host).

/// Read access to a root filesystem. Paths are absolute inside that root.
pub trait RootFs {
    /// The text of a file; None when it is missing or unreadable.
    fn read(&self, path: &str) -> Option<String>;
    /// Whether `path` is a regular file with an execute bit.
    fn is_executable(&self, path: &str) -> bool;
}

/// `$PATH` when the image and the podfile give none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `$PATH` of an environment (`KEY=value` entries), or [`DEFAULT_PATH`].
pub fn search_path(env: &[String]) -> &str {
    env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH)
}

/// The program `prog` names: itself when it has a slash, else the first executable of that name on `$PATH`.
pub fn find_executable(fs: &impl RootFs, prog: &str, env: &[String]) -> Result<String, String> {
    if prog.contains('/') {
        return Ok(prog.to_string());
    }
    let path = search_path(env);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = format!("{}/{prog}", dir.trim_end_matches('/'));
        if fs.is_executable(&cand) {
            return Ok(cand);
        }
    }
    Err(format!("executable {prog:?} not found in $PATH ({path})"))
}

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

/// The records of a colon-separated file (/etc/passwd, /etc/group) that have at least `fields` fields and parse;
/// other lines are skipped, as the C library skips them.
fn records<T>(fs: &impl RootFs, path: &str, fields: usize, parse: impl Fn(&[&str]) -> Option<T>) -> Vec<T> {
    let text = fs.read(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < fields { None } else { parse(&f) }
        })
        .collect()
}

fn passwd(fs: &impl RootFs) -> Vec<PasswdEntry> {
    records(fs, "/etc/passwd", 7, |f| Some(PasswdEntry { name: f[0].into(), uid: f[2].parse().ok()?, gid: f[3].parse().ok()?, home: f[5].into() }))
}

fn groups(fs: &impl RootFs) -> Vec<GroupEntry> {
    records(fs, "/etc/group", 4, |f| {
        Some(GroupEntry { name: f[0].into(), gid: f[2].parse().ok()?, members: f[3].split(',').filter(|m| !m.is_empty()).map(str::to_string).collect() })
    })
}

/// Resolves a group name or number.
pub fn resolve_group(fs: &impl RootFs, g: &str) -> Result<u32, String> {
    gid_in(&groups(fs), g)
}

/// A group name or number, looked up in /etc/group entries already read.
fn gid_in(all: &[GroupEntry], g: &str) -> Result<u32, String> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    all.iter().find(|e| e.name == g).map(|e| e.gid).ok_or_else(|| format!("no group {g:?} in the container's /etc/group"))
}

/// Resolves a user name or number.
pub fn resolve_user_id(fs: &impl RootFs, u: &str) -> Result<u32, String> {
    if let Ok(n) = u.parse::<u32>() {
        return Ok(n);
    }
    passwd(fs).into_iter().find(|e| e.name == u).map(|e| e.uid).ok_or_else(|| format!("no user {u:?} in the container's /etc/passwd"))
}

/// Resolves who a process runs as: `user` (name or uid, optionally `user:group`), an explicit `group`, and
/// additional groups; the user's supplementary groups from /etc/group are included as Docker does.
pub fn resolve(fs: &impl RootFs, user: &str, group: &str, additional: &[String]) -> Result<Identity, String> {
    let (user, inline_group) = match user.split_once(':') {
        Some((u, g)) => (u, g),
        None => (user, ""),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entries = passwd(fs);
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
    let all = groups(fs);
    let gid = if group.is_empty() { entry.gid } else { gid_in(&all, group)? };
    let mut gids: Vec<u32> = all.iter().filter(|g| g.members.contains(&entry.name)).map(|g| g.gid).collect();
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
    use std::collections::HashMap;

    struct Files(HashMap<&'static str, &'static str>);

    impl RootFs for Files {
        fn read(&self, path: &str) -> Option<String> {
            self.0.get(path).map(|s| s.to_string())
        }
        fn is_executable(&self, path: &str) -> bool {
            self.0.get(path) == Some(&"#!exe")
        }
    }

    #[test]
    fn resolves_names_numbers_and_groups() {
        let d = Files(HashMap::from([
            ("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nbroken:x:zz\n"),
            ("/etc/group", "root:x:0:\napp:x:1000:\nstaff:x:50:app\ncdrom:x:24:\n"),
        ]));
        let i = resolve(&d, "app", "", &["cdrom".into(), "8".into()]).unwrap();
        assert_eq!((i.uid, i.gid, i.home.as_str()), (1000, 1000, "/home/app"));
        assert_eq!(i.groups, vec![8, 24, 50]);
        assert_eq!(resolve(&d, "", "", &[]).unwrap().uid, 0);
        assert_eq!(resolve(&d, "1000:staff", "", &[]).unwrap().gid, 50);
        assert_eq!(resolve(&d, "4242", "", &[]).unwrap().uid, 4242);
        assert!(resolve(&d, "nobody-here", "", &[]).unwrap_err().contains("no user"));
        assert!(resolve(&d, "app", "nogroup", &[]).unwrap_err().contains("no group"));
        assert_eq!(resolve_user_id(&d, "app").unwrap(), 1000);
        assert_eq!(resolve_group(&d, "staff").unwrap(), 50);
        // No /etc/passwd at all: numbers still work, names do not.
        let empty = Files(HashMap::new());
        assert_eq!(resolve(&empty, "", "", &[]).unwrap().uid, 0);
        assert!(resolve(&empty, "app", "", &[]).is_err());
    }

    #[test]
    fn finds_programs_on_the_path_in_order() {
        let d = Files(HashMap::from([("/bin/sh", "#!exe"), ("/usr/bin/sh", "#!exe"), ("/usr/local/bin/data", "text")]));
        assert_eq!(find_executable(&d, "sh", &[]).unwrap(), "/usr/bin/sh");
        assert_eq!(find_executable(&d, "sh", &["PATH=/bin/:/usr/bin".into()]).unwrap(), "/bin/sh");
        assert_eq!(find_executable(&d, "./run", &[]).unwrap(), "./run");
        assert!(find_executable(&d, "data", &[]).unwrap_err().contains("not found in $PATH"));
    }
}
