//! An image's /etc/passwd and /etc/group (read by the daemon for VM pods) and a podfile's user, group and
//! command never panic the lookups, and a found program is always on the search path or given with a slash.
#![no_main]
use passwd::RootFs;

struct Files {
    passwd: String,
    group: String,
    exe: String,
}

impl RootFs for Files {
    fn read(&self, path: &str) -> Option<String> {
        match path {
            "/etc/passwd" => Some(self.passwd.clone()),
            "/etc/group" => Some(self.group.clone()),
            _ => None,
        }
    }
    fn is_executable(&self, path: &str) -> bool {
        path == self.exe
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    // Fields separated by NULs: passwd, group, user, group name, an extra group, a program, $PATH.
    let f: Vec<&str> = s.split('\0').collect();
    let get = |i: usize| f.get(i).copied().unwrap_or("");
    let fs = Files { passwd: get(0).into(), group: get(1).into(), exe: get(5).into() };
    let _ = passwd::resolve(&fs, get(2), get(3), &[get(4).to_string()]);
    let _ = passwd::resolve_user_id(&fs, get(2));
    let _ = passwd::resolve_group(&fs, get(3));
    let env = vec![format!("PATH={}", get(6))];
    if let Ok(exe) = passwd::find_executable(&fs, get(5).rsplit('/').next().unwrap_or(""), &env) {
        assert!(exe.contains('/'), "{exe}");
    }
});
