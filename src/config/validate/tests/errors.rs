//! Errors common to every file: syntax, unknown keys, names across files, scalar values, and
//! that every error is collected and placed by line and column (in characters).

use super::{assert_prefix, error, errors, USERS};

#[test]
fn syntax_error() {
    assert_prefix(&error("[[route]\nname = \"a\"\n"), "routes/a.toml:1:9: ");
    assert_prefix(&error("[[route]]\nname = \"a\nupstream = \"users\"\n"), "routes/a.toml:2:");
}

#[test]
fn unknown_key_in_route() {
    assert_prefix(
        &error("[[route]]\nname = \"a\"\nupstream = \"users\"\npath_prefx = \"/a\"\n"),
        "routes/a.toml:4:1: unknown field `path_prefx`, expected one of `name`, `hosts`, `path`",
    );
}

#[test]
fn unknown_key_in_upstream_health() {
    assert_prefix(
        &error("[[upstream]]\nname = \"u\"\nendpoints = [\"a:1\"]\n\n[upstream.health]\ninterval = \"5s\"\n  intervall = \"5s\"\n"),
        "routes/a.toml:7:3: unknown field `intervall`, expected one of `type`, `path`",
    );
}

#[test]
fn unknown_key_in_inline_tables() {
    assert_prefix(
        &error("[[upstream]]\nname = \"u\"\nendpoints = [{ address = \"a:1\", wieght = 2 }]\n"),
        "routes/a.toml:3:33: unknown field `wieght`, expected `address` or `weight`",
    );
    assert_prefix(
        &error("[[upstream]]\nname = \"u\"\ndiscovery = { type = \"dns\", name = \"x\", prot = 80 }\n"),
        "routes/a.toml:3:41: unknown field `prot`",
    );
}

#[test]
fn duplicate_route_name_across_files() {
    let errs = errors(&[
        ("a.toml", "[[route]]\nname = \"api\"\nupstream = \"users\"\n"),
        ("b.toml", "# second\n[[route]]\n  name = \"api\"\nupstream = \"users\"\n"),
        ("c.toml", USERS),
    ]);
    assert_eq!(
        errs,
        ["routes/b.toml:3:10: duplicate route name \"api\" (first defined at routes/a.toml:2); route \
          names must be unique across all route files"]
    );
}

#[test]
fn duplicate_upstream_name_across_files() {
    let errs = errors(&[("a.toml", USERS), ("b.toml", USERS)]);
    assert_eq!(errs.len(), 1);
    assert_prefix(
        &errs[0],
        "routes/b.toml:2:8: duplicate upstream name \"users\" (first defined at routes/a.toml:2)",
    );
}

#[test]
fn dangling_upstream() {
    assert_eq!(
        error("[[route]]\nname = \"x\"\nupstream = \"y\"\n"),
        "routes/a.toml:3:12: route \"x\" names upstream \"y\", which is not defined in any file \
         under routes/; defined upstreams: \"users\""
    );
    assert_prefix(
        &error("[[route]]\nname = \"x\"\nsplit = [{ upstream = \"users\", weight = 1 }, { upstream = \"userz\", weight = 1 }]\n"),
        "routes/a.toml:3:59: route \"x\" names upstream \"userz\", which is not defined in any file under routes/",
    );
    // With many upstreams, only the closest name is suggested.
    let many: String =
        (0..20).map(|i| format!("[[upstream]]\nname = \"svc-{i}\"\nendpoints = [\"a:1\"]\n")).collect();
    let errs = errors(&[("a.toml", "[[route]]\nname = \"x\"\nupstream = \"svc-13x\"\n"), ("b.toml", &many)]);
    assert!(errs[0].ends_with("; did you mean \"svc-13\"?"), "{}", errs[0]);
}

#[test]
fn dangling_check_skipped_when_a_file_is_broken() {
    // The broken file may be the one defining the upstream: report only its syntax error.
    let errs =
        errors(&[("a.toml", "[[route]]\nname = \"x\"\nupstream = \"y\"\n"), ("b.toml", "[[upstream]\n")]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_prefix(&errs[0], "routes/b.toml:1:");
}

#[test]
fn bad_duration() {
    assert_eq!(
        error("[[route]]\nname = \"a\"\nupstream = \"users\"\ntimeout = \"5\"\n"),
        "routes/a.toml:4:11: invalid duration \"5\": add a unit, e.g. \"5s\""
    );
    assert_eq!(
        error("[[route]]\nname = \"a\"\nupstream = \"users\"\ntimeout = 5\n"),
        "routes/a.toml:4:11: invalid duration \"5\": add a unit, e.g. \"5s\""
    );
    assert_prefix(
        &error(
            "[[upstream]]\nname = \"u\"\nendpoints = [\"a:1\"]\n[upstream.health]\ninterval = \"5 sec\"\n",
        ),
        "routes/a.toml:5:12: invalid duration \"5 sec\": unknown unit",
    );
}

#[test]
fn bad_size() {
    assert_prefix(
        &error("[[route]]\nname = \"a\"\nupstream = \"users\"\nmax_request_body_bytes = \"1XB\"\n"),
        "routes/a.toml:4:26: invalid size \"1XB\": unknown unit \"XB\"",
    );
    assert_prefix(
        &error("[[route]]\nname = \"a\"\nupstream = \"users\"\nmax_request_body_bytes = -1\n"),
        "routes/a.toml:4:26: invalid size -1",
    );
}

#[test]
fn value_errors() {
    let bad = |body: &str| error(&format!("[[route]]\nname = \"a\"\nupstream = \"users\"\n{body}\n"));
    assert_prefix(&bad("methods = [\"G ET\"]"), "routes/a.toml:4:12: invalid method \"G ET\"");
    assert_prefix(&bad("headers = { \"x y\" = \"1\" }"), "routes/a.toml:4:13: invalid header name \"x y\"");
    assert_prefix(&bad("path = \"a\""), "routes/a.toml:4:8: `path` \"a\" must start with \"/\"");
    assert_prefix(
        &bad("path = \"/a\"\npath_prefix = \"/b\""),
        "routes/a.toml:2:8: route \"a\" sets `path` and `path_prefix`",
    );
    assert_prefix(
        &bad("rate_limit = { requests_per_second = 0 }"),
        "routes/a.toml:4:38: `requests_per_second` must be greater than zero",
    );
    assert_prefix(
        &bad("rate_limit = { requests_per_second = 1, key = \"ip\" }"),
        "routes/a.toml:4:47: unknown rate_limit `key` \"ip\"",
    );
    assert_prefix(
        &bad("[route.retry]\non = [\"status:600\"]"),
        "routes/a.toml:5:7: invalid retry condition \"status:600\"",
    );
    assert_prefix(
        &bad("[route.retry]\non = [\"5xx\", \"502\"]"),
        "routes/a.toml:5:14: unknown retry condition \"502\"",
    );
    assert_prefix(
        &bad("[route.retry]\nbudget = 1.5"),
        "routes/a.toml:5:10: `budget` must be between 0 and 1, got 1.5",
    );
    let bad_action = |body: &str| error(&format!("[[route]]\nname = \"a\"\n{body}\n"));
    assert_prefix(
        &bad_action("redirect = { to = \"/\", status = 300 }"),
        "routes/a.toml:3:33: invalid redirect status 300",
    );
    assert_prefix(&bad_action("respond = { status = 1000 }"), "routes/a.toml:3:22: invalid status 1000");
    assert_prefix(
        &bad_action("split = [{ upstream = \"users\", weight = 0 }]"),
        "routes/a.toml:3:9: `split` weights add up to 0",
    );
    let bad_up = |body: &str| error(&format!("[[upstream]]\nname = \"u\"\nendpoints = [\"a:1\"]\n{body}\n"));
    assert_prefix(
        &bad_up("balance = \"fastest\""),
        "routes/a.toml:4:11: unknown `balance` \"fastest\"; expected one of: round_robin,",
    );
    assert_prefix(&bad_up("hash_on = \"ip\""), "routes/a.toml:4:11: unknown `hash_on` \"ip\"");
    assert_prefix(
        &bad_up("panic_threshold = 101"),
        "routes/a.toml:4:19: `panic_threshold` must be between 0 and 100, got 101",
    );
    assert_prefix(
        &bad_up("[upstream.health]\nexpected_status = \"399-200\""),
        "routes/a.toml:5:19: invalid `expected_status` \"399-200\"",
    );
    assert_prefix(
        &bad_up("[upstream.health]\nhealthy_threshold = 0"),
        "routes/a.toml:5:21: `healthy_threshold` must be at least 1, got 0",
    );
    assert_prefix(
        &bad_up("[upstream.health]\ntype = \"tcp\"\npath = \"/x\""),
        "routes/a.toml:6:8: `path` applies to http health checks only",
    );
}

#[test]
fn columns_count_characters() {
    // "é" is two bytes; the column of the value after it counts it once.
    assert_prefix(
        &error("[[route]]\nname = \"a\"\nupstream = \"users\"\nheaders = { \"é\" = \"1\" }\n"),
        "routes/a.toml:4:13: invalid header name \"é\"",
    );
    assert_prefix(
        &error("[[route]]\nname = \"a\"\nupstream = \"users\"\nquery = { \"é\" = \"1\" }\ntimeout = \"1\"\n"),
        "routes/a.toml:5:11: invalid duration",
    );
}

#[test]
fn all_errors_are_collected() {
    let a = "[[route]]\nname = \"one\"\nupstream = \"nope\"\ntimeout = \"5\"\n\n\
             [[route]]\nname = \"two\"\npath_regex = \"(\"\nupstream = \"users\"\n";
    let b = "[[route]]\nname = \"one\"\nrespond = { status = 200 }\nredirect = { to = \"/\" }\n";
    let c = "[[upstream]]\nname = \"users\"\nendpoints = [\"a:1\"]\nconnect_timeout = \"1x\"\n";
    let d = "[[route]\n";
    let errs = errors(&[("a.toml", a), ("b.toml", b), ("c.toml", c), ("d.toml", d)]);
    let heads: Vec<&str> = errs.iter().map(|e| e.split(": ").next().unwrap()).collect();
    assert_eq!(
        heads,
        [
            "routes/a.toml:4:11",
            "routes/a.toml:8:14",
            "routes/b.toml:2:8",
            "routes/b.toml:2:8",
            "routes/c.toml:4:19",
            "routes/d.toml:1:9",
        ],
        "{errs:#?}"
    );
    assert_prefix(&errs[2], "routes/b.toml:2:8: route \"one\" sets `respond` and `redirect`");
    assert_prefix(&errs[3], "routes/b.toml:2:8: duplicate route name \"one\"");
    // The dangling "nope" is not reported: d.toml is broken and might define it. Without
    // d.toml it is.
    let errs = errors(&[("a.toml", a), ("b.toml", b), ("c.toml", c)]);
    assert_eq!(errs.len(), 6, "{errs:#?}");
    assert_prefix(&errs[0], "routes/a.toml:3:12: route \"one\" names upstream \"nope\"");
}
