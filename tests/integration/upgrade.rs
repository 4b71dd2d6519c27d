//! Jobs queued by the previous release keep draining (SPEC "Queued
//! jobs"). The fixtures in `tests/fixtures/release-0.1/` were written by
//! retry 0.1.0 (commit bb23a2a), with `env -i PATH=/usr/bin:/bin
//! LANG=C.UTF-8`, in `/`:
//!
//! ```text
//! printf hello | retry -n 1 --wait 10ms --stdin replay --max-age 3650days \
//!     --queue DIR-OR-URL -- sh -c '[ "$(cat)" = hello ] && [ "$RETRY_ATTEMPT" = 3 ]'
//! ```
//!
//! Each job failed twice and succeeds on its third attempt only when its
//! recorded stdin, its attempt count and its saved options arrive intact.

use std::os::unix::fs::PermissionsExt as _;

use predicates::prelude::*;

use crate::server::RedisServer;
use crate::util::*;

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(&format!("release-0.1/{name}"))).unwrap()
}

#[test]
fn a_directory_job_of_the_previous_release_drains() {
    let t = T::new();
    let q = t.path("q");
    std::fs::create_dir(&q).unwrap();
    std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o700)).unwrap();
    let id = "20261203T094220.128106Z-f66d9808";
    std::fs::write(q.join(format!("{id}.job")), fixture_bytes("dir-job.json")).unwrap();
    std::fs::write(q.join(format!("{id}.stdin")), fixture_bytes("dir-job.stdin")).unwrap();
    let listed = t.retry().args(["--list", path_str(&q)]).output().unwrap();
    let line = String::from_utf8(listed.stdout).unwrap();
    assert!(line.contains(&format!("\"id\":\"{id}\"")) && line.contains("\"attempts\":2"), "{line}");
    t.retry().args(["--drain", path_str(&q)]).assert().code(0).stderr(predicate::str::contains(format!(
        "job {id}: succeeded on attempt 3; removed from the queue"
    )));
    assert!(!q.join(format!("{id}.job")).exists());
    assert!(!q.join(format!("{id}.stdin")).exists());
}

#[test]
fn a_redis_job_of_the_previous_release_drains() {
    let server = RedisServer::start();
    let t = T::new();
    let id = "20261203T094220.690736Z-04a2cb0a";
    let mut c = server.client();
    // The keys and fields the previous release wrote for queue `fixture`.
    let job_key = format!("retry:queue:fixture:job:{id}");
    let () = redis::cmd("HSET")
        .arg(&job_key)
        .arg("claim")
        .arg("0")
        .arg("holder")
        .arg("")
        .arg("due")
        .arg("1796290940732328")
        .arg("doc")
        .arg(fixture_bytes("redis-job.json"))
        .query(&mut c)
        .unwrap();
    let () = redis::cmd("ZADD")
        .arg("retry:queue:fixture:due")
        .arg("1796290940732328")
        .arg(id)
        .query(&mut c)
        .unwrap();
    let () = redis::cmd("SET")
        .arg(format!("retry:queue:fixture:stdin:{id}"))
        .arg(fixture_bytes("redis-job.stdin"))
        .query(&mut c)
        .unwrap();
    let queue = format!("{}#fixture", server.url());
    t.retry().args(["--drain", &queue]).assert().code(0).stderr(predicate::str::contains(format!(
        "job {id}: succeeded on attempt 3; removed from the queue"
    )));
    let out = t.retry().args(["--list", &queue]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
}
