use super::*;

fn err(text: &str) -> SpecError {
    parse(text, Format::Json).expect_err("should fail")
}

#[test]
fn minimal_and_full_podfiles() {
    let p = parse(r#"{"containers":[{"image":"busybox"}]}"#, Format::Json).unwrap();
    assert_eq!(p.containers[0].image, "busybox");
    assert_eq!(p.resource(), Resource { vcpu: 1, memory: 128 });
    let p = parse(
        r#"{ "id": "test-container-multi",
  "containers": [
    {"name": "web", "image": "tomcat:latest",
     "volumes": [{"volume": "log", "path": "/var/log", "readOnly": false},
                 {"volume": "tmp", "path": "/mnt", "readOnly": false}]},
    {"name": "shell", "image": "ubuntu:latest", "workdir": "/", "command": ["/bin/bash"],
     "volumes": [{"volume": "log", "path": "/var/log", "readOnly": false}]}],
  "resource": {"vcpu": 1, "memory": 512},
  "files": [],
  "volumes": [{"name": "log", "source": "", "format": ""},
              {"name": "tmp", "source": "/tmp", "format": "vfs"}],
  "tty": true }"#,
        Format::Json,
    )
    .unwrap();
    assert!(p.containers[1].tty(&p));
    assert_eq!(p.resource().memory, 512);
}

#[test]
fn keys_are_case_insensitive_like_hyper() {
    let p = parse(
        r#"{"ID":"x","Containers":[{"Image":"busybox","Volumes":[{"volume":"v","path":"/v","readonly":true}]}],
            "volumes":[{"name":"v"}],"portmappings":[{"containerport":80,"hostport":"8080","protocol":"tcp"}]}"#,
        Format::Json,
    )
    .unwrap();
    assert_eq!(p.id, "x");
    assert!(p.containers[0].volumes[0].read_only);
    assert_eq!(p.portmappings[0].container_port, "80");
}

#[test]
fn unknown_fields_get_a_path_and_a_suggestion() {
    let e = err(r#"{"containers":[{"image":"a"},{"imgae":"busybox"}]}"#);
    assert_eq!(e.path, "containers[1].imgae");
    assert!(e.message.contains("did you mean `image`"), "{e}");
    let e = err(r#"{"hostnmae":"x","containers":[{"image":"a"}]}"#);
    assert_eq!(e.to_string(), "hostnmae: unknown field (did you mean `hostname`?)");
    let e = err(r#"{"containers":[{"image":"a","zzzzzzzz":1}]}"#);
    assert_eq!(e.to_string(), "containers[0].zzzzzzzz: unknown field");
}

#[test]
fn type_errors_name_the_field() {
    let e = err(r#"{"containers":[{"image":"a","command":"sh -c x"}]}"#);
    assert_eq!(e.path, "containers[0].command");
    let e = err(r#"{"resource":{"vcpu":"two"},"containers":[{"image":"a"}]}"#);
    assert_eq!(e.path, "resource.vcpu");
}

#[test]
fn semantic_errors() {
    assert_eq!(err(r#"{"containers":[]}"#).path, "containers");
    assert_eq!(err(r#"{"containers":[{"name":"a","image":"x"},{"name":"a","image":"y"}]}"#).to_string(), "containers[1].name: duplicate container name \"a\"");
    assert_eq!(err(r#"{"containers":[{"image":""}]}"#).to_string(), "containers[0].image: missing image");
    assert_eq!(err(r#"{"containers":[{}]}"#).path, "containers[0]");
    assert!(err(r#"{"hostname":"bad_host!","containers":[{"image":"a"}]}"#).to_string().starts_with("hostname: invalid hostname"));
    assert_eq!(err(r#"{"containers":[{"image":"a","volumes":[{"volume":"nope","path":"/x"}]}]}"#).path, "containers[0].volumes[0].volume");
    assert_eq!(err(r#"{"files":[{"name":"f"}],"containers":[{"image":"a","files":[{"filename":"f","path":"/x","perm":"755"}]}]}"#).path, "containers[0].files[0].perm");
    assert_eq!(err(r#"{"containers":[{"image":"a","sysctl":{"kernel.panic":"1"}}]}"#).path, "containers[0].sysctl.kernel.panic");
    assert_eq!(err(r#"{"services":[{"serviceIP":"1.2.3.4"}],"containers":[{"image":"a"}]}"#).to_string(), "services: in-pod service load balancing is not supported by hyper");
    assert_eq!(err(r#"{"dns":["8.8.8"],"containers":[{"image":"a"}]}"#).path, "dns[0]");
    assert_eq!(err(r#"{"portmappings":[{"containerPort":"80-90","hostPort":"80-85"}],"containers":[{"image":"a"}]}"#).path, "portmappings[0]");
    assert_eq!(err(r#"{"containers":[{"image":"a","restartPolicy":"sometimes"}]}"#).path, "containers[0].restartPolicy");
    assert_eq!(err(r#"{"volumes":[{"name":"v","source":"rel/path","format":"vfs"}],"containers":[{"image":"a"}]}"#).path, "volumes[0].source");
    assert_eq!(err(r#"{"files":[{"name":"f","encoding":"base64","content":"!!"}],"containers":[{"image":"a"}]}"#).path, "files[0].content");
}

#[test]
fn yaml_and_malformed_input() {
    let p = parse("id: y\ncontainers:\n  - image: busybox\n    command: [sleep, '10']\n", Format::Yaml).unwrap();
    assert_eq!(p.containers[0].command, vec!["sleep", "10"]);
    assert!(err("{\"containers\": [").message.starts_with("malformed JSON"));
    assert!(parse("containers: [ {", Format::Yaml).unwrap_err().message.starts_with("malformed YAML"));
    assert_eq!(err("[1,2]").message, "a podfile must be an object");
}

#[test]
fn signals_and_ulimits() {
    assert_eq!(signal_number("SIGTERM"), Some(15));
    assert_eq!(signal_number("kill"), Some(9));
    assert_eq!(signal_number("RTMIN+2"), Some(36));
    assert_eq!(signal_number("SIGNOPE"), None);
    assert_eq!(types_ulimit_known("nofile"), Some(7));
    assert_eq!(types_ulimit_known("RLIMIT_NPROC"), Some(6));
}

/// Random and mutated inputs never panic the parser (a cheap, always-on complement to fuzz/).
#[test]
fn parser_survives_garbage() {
    let seeds = [
        r#"{"id":"a","containers":[{"image":"b","envs":[{"env":"X","value":"1"}],"files":[{"filename":"f","path":"/p"}]}],"files":[{"name":"f","content":"x"}]}"#,
        "containers:\n - image: a\n   volumes: [{volume: v, path: /x}]\nvolumes: [{name: v}]\n",
    ];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for seed in seeds {
        for _ in 0..3000 {
            let mut b = seed.as_bytes().to_vec();
            for _ in 0..(x % 4 + 1) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % b.len();
                match x % 3 {
                    0 => b[i] = (x >> 8) as u8,
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, b"{}[]\":,x0"[(x >> 16) as usize % 9]),
                }
                if b.is_empty() {
                    b.push(b'{');
                }
            }
            let s = String::from_utf8_lossy(&b);
            let _ = parse(&s, Format::Json);
            let _ = parse(&s, Format::Yaml);
        }
    }
}

#[test]
fn keys_in_the_wrong_case_are_renamed_up_to_a_bound() {
    // Each such key costs a pass over the whole document: a podfile of many of them is refused, not parsed
    // for minutes.
    let pod = |n: usize| {
        let cs: Vec<String> = (0..n).map(|i| format!(r#"{{"name":"c{i}","Image":"busybox"}}"#)).collect();
        format!(r#"{{"containers":[{}]}}"#, cs.join(","))
    };
    let spec = parse(&pod(10), Format::Json).unwrap();
    assert_eq!(spec.containers.len(), 10);
    let e = parse(&pod(300), Format::Json).unwrap_err().to_string();
    assert!(e.contains("more than 256 keys differ from their field's name in case only"), "{e}");
}

#[test]
fn a_zero_resource_is_the_default() {
    let p = parse(r#"{"resource":{"vcpu":0,"memory":0},"containers":[{"image":"a"}]}"#, Format::Json).unwrap();
    assert_eq!(p.resource(), Resource { vcpu: 1, memory: 128 });
    let p = parse(r#"{"resource":{"vcpu":2,"memory":0},"containers":[{"image":"a"}]}"#, Format::Json).unwrap();
    assert_eq!(p.resource(), Resource { vcpu: 2, memory: 128 });
}

#[test]
fn cache_modes_and_filesystem_types() {
    let ok = |c: &str| parse(c, Format::Json).map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(ok(r#"{"containers":[{"image":"a","cache":"writeback"}],"volumes":[{"name":"v","source":"","cache":"none","fstype":"dir"}]}"#), Ok(()));
    let e = err(r#"{"containers":[{"image":"a","cache":"fast"}]}"#);
    assert_eq!(e.path, "containers[0].cache");
    let e = err(r#"{"containers":[{"image":"a"}],"volumes":[{"name":"v","source":"/srv","format":"vfs","fstype":"xfs"}]}"#);
    assert_eq!(e.path, "volumes[0].fstype");
}
