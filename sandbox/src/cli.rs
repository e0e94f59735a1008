//! The sandbox's command line: `serve` (the default) and `demo`, their flags, per-command
//! defaults and the usage text. Parsed by hand (no dependency): `--flag value` or
//! `--flag=value`; anything unknown or malformed is a [`CliError`], which `main` turns into
//! one line on stderr and exit status 2.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::simulator::{DEFAULT_REFUND_DELAY, WECHAT_REFUND_SPACING};

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the sandbox until Ctrl-C.
    Serve(Options),
    /// Run the whole story once against a fresh data dir, then exit.
    Demo(Options),
    /// Ask a running sandbox (`--port`, its `--data-dir`'s sandbox.env token) to reconcile
    /// WeChat Pay's trade bill of a Beijing date (`None`: today), and print the report.
    Reconcile(Options, Option<time::Date>),
    /// Print [`usage`] and exit 0.
    Help,
}

/// The flags, with the defaults of the command they were given to.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Where the functions listen (`--port`); 0 lets the OS pick.
    pub port: u16,
    /// Where the WeChat Pay simulator listens (`--wechat-port`); 0 lets the OS pick.
    pub wechat_port: u16,
    /// `--data-dir`: keys, the SQLite file, `sandbox.env` (serve) or the demo's fresh dirs.
    pub data_dir: PathBuf,
    /// `--order-ttl`: how long an order may stay unpaid (`ORDER_TTL_SECONDS`).
    pub order_ttl: Duration,
    /// `--sweep-every`: how often the in-process timeout-sweeper runs.
    pub sweep_every: Duration,
    /// `--retry-scale`: multiplies WeChat Pay's notification retry schedule.
    pub retry_scale: f64,
    /// `--refund-delay`: how long a refund stays PROCESSING before the simulator settles it.
    pub refund_delay: Duration,
    /// `--refund-spacing`: least time between two refunds of one order (WeChat Pay: 60 s).
    pub refund_spacing: Duration,
    /// `--webhook-fail`: the webhook receiver answers 500 to this many good deliveries first.
    pub webhook_fail: u32,
    /// `--webhook-url` (serve): events go to this receiver (the merchant's own dev server)
    /// instead of the sandbox's; https, or http on loopback, as `WEBHOOK_URL` must be.
    pub webhook_url: Option<String>,
    /// `--push-url` (serve): where the simulated console sends its message pushes
    /// (settlements) instead of the sandbox's own mp-push route.
    pub push_url: Option<String>,
    /// `--products`: a catalog file instead of the built-in copy of
    /// `infra/local/products.json`.
    pub products: Option<PathBuf>,
    /// `--keep` (demo): keep the demo's data dir.
    pub keep: bool,
}

/// The demo refunds twice in a row: one second apart, each settled after one second.
const DEMO_REFUND_DELAY: Duration = Duration::from_secs(1);
const DEMO_REFUND_SPACING: Duration = Duration::from_secs(1);

impl Options {
    /// `serve`'s defaults: the README's ports, `.local/`, WeChat Pay's pace.
    pub fn serve_defaults() -> Options {
        Options {
            port: 3000,
            wechat_port: 3001,
            data_dir: PathBuf::from(".local"),
            order_ttl: Duration::from_secs(1800),
            sweep_every: Duration::from_secs(60),
            retry_scale: 1.0,
            refund_delay: DEFAULT_REFUND_DELAY,
            refund_spacing: WECHAT_REFUND_SPACING,
            webhook_fail: 0,
            webhook_url: None,
            push_url: None,
            products: None,
            keep: false,
        }
    }

    /// `demo`'s defaults: free ports, orders that expire in seconds, fast retries.
    pub fn demo_defaults() -> Options {
        Options {
            port: 0,
            wechat_port: 0,
            data_dir: PathBuf::from(".local"),
            order_ttl: Duration::from_secs(4),
            sweep_every: Duration::from_secs(1),
            retry_scale: 0.01,
            refund_delay: DEMO_REFUND_DELAY,
            refund_spacing: DEMO_REFUND_SPACING,
            webhook_fail: 0,
            webhook_url: None,
            push_url: None,
            products: None,
            keep: false,
        }
    }
}

/// A command line the sandbox cannot run; the message names the offending argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

fn err(message: impl Into<String>) -> CliError {
    CliError(message.into())
}

/// Longest order TTL: WeChat Pay keeps a prepay_id for 2 hours (same bound as
/// `ORDER_TTL_SECONDS`).
const MAX_ORDER_TTL_SECS: u64 = 7200;
const MAX_SWEEP_EVERY_SECS: u64 = 86_400;
const MAX_RETRY_SCALE: f64 = 1000.0;
const MAX_REFUND_DELAY_SECS: u64 = 86_400;
const MAX_REFUND_SPACING_SECS: u64 = 3600;
const MAX_WEBHOOK_FAIL: u32 = 1000;

/// Parses the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut args = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| err(format!("argument {a:?} is not valid UTF-8")))
        })
        .collect::<Result<Vec<String>, CliError>>()?
        .into_iter();

    let mut command: Option<&'static str> = None;
    let mut date: Option<time::Date> = None;
    // Flags are collected first and applied to the command's defaults afterwards, so they may
    // come before or after the command name.
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        if let Some(flag) = arg.strip_prefix("--") {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (flag.to_owned(), None),
            };
            let value = if takes_value(&name) {
                match inline {
                    Some(v) => Some(v),
                    None => Some(
                        args.next()
                            .ok_or_else(|| err(format!("--{name} needs a value")))?,
                    ),
                }
            } else if name == "keep" {
                if inline.is_some() {
                    return Err(err("--keep takes no value"));
                }
                None
            } else {
                return Err(err(format!("unknown option --{name}")));
            };
            flags.push((name, value));
            continue;
        }
        if arg.starts_with('-') && arg != "-" {
            return Err(err(format!("unknown option {arg}")));
        }
        if command == Some("reconcile") && date.is_none() {
            date = Some(shared::timefmt::parse_date(&arg).map_err(|_| {
                err(format!(
                    "reconcile: {arg:?} is not a date (yyyy-mm-dd, Beijing time)"
                ))
            })?);
            continue;
        }
        if let Some(first) = command {
            return Err(err(format!(
                "unexpected argument {arg:?} (the command is already {first:?})"
            )));
        }
        command = Some(match arg.as_str() {
            "serve" => "serve",
            "demo" => "demo",
            "reconcile" => "reconcile",
            "help" => return Ok(Command::Help),
            other => {
                return Err(err(format!(
                    "unknown command {other:?} (expected serve, demo or reconcile)"
                )));
            }
        });
    }

    let demo = command == Some("demo");
    let mut options = if demo {
        Options::demo_defaults()
    } else {
        Options::serve_defaults()
    };
    for (name, value) in flags {
        let value = value.unwrap_or_default();
        match name.as_str() {
            "port" => options.port = port(&name, &value)?,
            "wechat-port" => options.wechat_port = port(&name, &value)?,
            "data-dir" => {
                if value.is_empty() {
                    return Err(err("--data-dir must not be empty"));
                }
                options.data_dir = PathBuf::from(value);
            }
            "order-ttl" => {
                options.order_ttl = seconds(&name, &value, 1, MAX_ORDER_TTL_SECS)?;
            }
            "sweep-every" => {
                options.sweep_every = seconds(&name, &value, 1, MAX_SWEEP_EVERY_SECS)?;
            }
            "retry-scale" => options.retry_scale = retry_scale(&value)?,
            "refund-delay" => {
                options.refund_delay = seconds(&name, &value, 0, MAX_REFUND_DELAY_SECS)?;
            }
            "refund-spacing" => {
                options.refund_spacing = seconds(&name, &value, 0, MAX_REFUND_SPACING_SECS)?;
            }
            "webhook-fail" => options.webhook_fail = webhook_fail(&value)?,
            "webhook-url" => {
                if demo {
                    return Err(err(
                        "--webhook-url only applies to `serve` (the demo reads its own receiver)",
                    ));
                }
                let url = shared::config::webhook_url(value.trim())
                    .map_err(|e| err(format!("--webhook-url {value:?}: {e}")))?;
                options.webhook_url = Some(url.to_string());
            }
            "push-url" => {
                if demo {
                    return Err(err(
                        "--push-url only applies to `serve` (the demo reads its own mp-push)",
                    ));
                }
                let url = reqwest::Url::parse(value.trim())
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    .ok_or_else(|| err(format!("--push-url {value:?}: not an http(s) URL")))?;
                options.push_url = Some(url.to_string());
            }
            "products" => {
                if value.is_empty() {
                    return Err(err("--products must not be empty"));
                }
                options.products = Some(PathBuf::from(value));
            }
            "keep" => {
                if !demo {
                    return Err(err("--keep only applies to `demo`"));
                }
                options.keep = true;
            }
            _ => return Err(err(format!("unknown option --{name}"))),
        }
    }
    if options.port != 0 && options.port == options.wechat_port {
        return Err(err(format!(
            "--port and --wechat-port are both {}; they need different ports",
            options.port
        )));
    }
    Ok(if demo {
        Command::Demo(options)
    } else if command == Some("reconcile") {
        Command::Reconcile(options, date)
    } else {
        Command::Serve(options)
    })
}

fn takes_value(name: &str) -> bool {
    matches!(
        name,
        "port"
            | "wechat-port"
            | "data-dir"
            | "order-ttl"
            | "sweep-every"
            | "retry-scale"
            | "refund-delay"
            | "refund-spacing"
            | "webhook-fail"
            | "webhook-url"
            | "push-url"
            | "products"
    )
}

fn port(name: &str, value: &str) -> Result<u16, CliError> {
    value.trim().parse().map_err(|_| {
        err(format!(
            "--{name} must be a TCP port, 0 to 65535 (got {value:?})"
        ))
    })
}

fn seconds(name: &str, value: &str, min: u64, max: u64) -> Result<Duration, CliError> {
    match value.trim().parse::<u64>() {
        Ok(s) if (min..=max).contains(&s) => Ok(Duration::from_secs(s)),
        _ => Err(err(format!(
            "--{name} must be a whole number of seconds from {min} to {max} (got {value:?})"
        ))),
    }
}

fn webhook_fail(value: &str) -> Result<u32, CliError> {
    match value.trim().parse::<u32>() {
        Ok(n) if n <= MAX_WEBHOOK_FAIL => Ok(n),
        _ => Err(err(format!(
            "--webhook-fail must be a whole number from 0 to {MAX_WEBHOOK_FAIL} (got {value:?})"
        ))),
    }
}

fn retry_scale(value: &str) -> Result<f64, CliError> {
    match value.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=MAX_RETRY_SCALE).contains(&s) => Ok(s),
        _ => Err(err(format!(
            "--retry-scale must be a number from 0 to {MAX_RETRY_SCALE} (got {value:?}); \
             1 is WeChat Pay's pace, 0.01 turns its 15 s first retry into 150 ms"
        ))),
    }
}

/// The `--help` text.
pub fn usage() -> String {
    let s = Options::serve_defaults();
    let d = Options::demo_defaults();
    let routes = RouteBlocks::build();
    format!(
        "\
wxpay-orders sandbox: every function, an embedded DynamoDB-compatible engine and a WeChat Pay
v3 simulator on localhost, with no setup (DESIGN.md section 9).

USAGE:
    sandbox [serve] [OPTIONS]    run until Ctrl-C (the default command)
    sandbox demo [OPTIONS]       run the whole story once against a fresh data dir, then exit
    sandbox reconcile [DATE] [--port PORT] [--data-dir DIR]
                                 ask the running sandbox to reconcile WeChat Pay's trade bill
                                 of DATE (yyyy-mm-dd, Beijing; default today) and print the
                                 report (POST /merchant/bills/DATE/reconcile)
    sandbox --help

OPTIONS:                                                          [serve / demo default]
    --port PORT            where the functions listen (0: any free port)   [{sp} / {dp}]
    --wechat-port PORT     where the WeChat Pay simulator listens          [{swp} / {dwp}]
    --data-dir DIR         keys, data and sandbox.env; demo: a fresh       [{sdd} / {ddd}]
                           DIR/demo-<time>/, deleted at the end
    --order-ttl SECONDS    how long an order may stay unpaid (1-7200)      [{sttl} / {dttl}]
    --sweep-every SECONDS  timeout-sweeper interval                        [{sse} / {dse}]
    --retry-scale FACTOR   multiplies WeChat Pay's notification retry      [{srs} / {drs}]
                           schedule (15 s, 15 s, 30 s, 3 m, ... 6 h)
    --refund-delay SECONDS a refund stays PROCESSING this long, then       [{srd} / {drd}]
                           succeeds and is notified (0-86400)
    --refund-spacing SECONDS  least time between two refunds of one order  [{srsp} / {drsp}]
                           (429 FREQUENCY_LIMITED sooner; 0-3600)
    --webhook-fail N       the webhook receiver answers 500 to the first   [{swf} / {dwf}]
                           N deliveries with a good signature (0-1000)
    --webhook-url URL      serve: send order events to URL (your own dev server;
                           https, or http on 127.0.0.1/localhost) instead of the
                           sandbox's receiver; signed with sandbox.env's WEBHOOK_SECRET
    --push-url URL         serve: the simulated mini-program console pushes settlements
                           to URL (default: the sandbox's own /notify/wechat-mp), signed
                           and encrypted with sandbox.env's WX_PUSH_TOKEN / WX_PUSH_AES_KEY
    --products FILE        catalog to seed (default: the built-in copy of infra/local/products.json)
    --keep                 demo: keep its data dir instead of deleting it

serve:
    The functions on http://127.0.0.1:PORT, one port, dispatched by path:
{functions}    The timeout-sweeper has no route: it runs in-process every --sweep-every seconds,
    closing expired orders (stock returned) and applying payments whose notification was lost.
    Debug identity is on: send `X-Debug-Openid: <any openid>` instead of a session token.
    The simulator on http://127.0.0.1:WECHAT_PORT: WeChat Pay's API (merchant-signed requests,
    signed answers) and WeChat's login (js_code `invalid-code` answers errcode 40029):
{wechat}    and its own controls (JSON, no signature):
{controls}    First start writes DIR/keys/ (merchant and WeChat Pay keys, APIv3 key); every start
    rewrites DIR/sandbox.env (mode 0600: it holds secrets) with the variables that point the
    real function binaries at this sandbox:
        set -a; . DIR/sandbox.env; set +a; PORT=9100 target/debug/place-order
    Orders and stock live in DIR/orders.sqlite and survive restarts. On each start the
    catalog inserts missing skus and refreshes name/price/stock/active of existing ones from
    the catalog file, keeping their reserved and sold counters. The simulator keeps its
    transactions in memory: orders from before a restart can no longer be paid.

demo:
    Places an order, pays it with duplicate notifications, shows it PAID exactly once,
    replays the Idempotency-Key, reuses it with another body, runs out of stock and lets a
    second order expire. Exits 0 when every step behaved, 1 naming the step that did not.
",
        sp = s.port,
        dp = d.port,
        swp = s.wechat_port,
        dwp = d.wechat_port,
        sdd = s.data_dir.display(),
        ddd = d.data_dir.display(),
        sttl = s.order_ttl.as_secs(),
        dttl = d.order_ttl.as_secs(),
        sse = s.sweep_every.as_secs(),
        dse = d.sweep_every.as_secs(),
        srs = s.retry_scale,
        drs = d.retry_scale,
        srd = s.refund_delay.as_secs(),
        drd = d.refund_delay.as_secs(),
        srsp = s.refund_spacing.as_secs(),
        drsp = d.refund_spacing.as_secs(),
        swf = s.webhook_fail,
        dwf = d.webhook_fail,
        functions = routes.functions,
        wechat = routes.wechat,
        controls = routes.controls,
    )
}

/// Every route the sandbox serves, as aligned text blocks (one route a line), from the lists
/// the routers are built from: `--help` and `serve`'s start-up text print these.
pub struct RouteBlocks {
    /// The functions port ([`crate::router::ENDPOINTS`]).
    pub functions: String,
    /// The simulator as WeChat: WeChat Pay's API and the login.
    pub wechat: String,
    /// The simulator's `/sandbox/*` controls.
    pub controls: String,
}

impl RouteBlocks {
    pub fn build() -> Self {
        use crate::simulator::{control_endpoints, wechat_endpoints};
        RouteBlocks {
            functions: lines(
                crate::router::ENDPOINTS
                    .iter()
                    .map(|e| (e.method, e.path, e.what)),
            ),
            wechat: lines(wechat_endpoints().map(|e| (e.method, e.path, e.what))),
            controls: lines(control_endpoints().map(|e| (e.method, e.path, e.what))),
        }
    }
}

/// `(method, path, what)` rows, the paths padded to one column.
fn lines(routes: impl Iterator<Item = (&'static str, &'static str, &'static str)>) -> String {
    let routes: Vec<_> = routes.collect();
    let width = routes
        .iter()
        .map(|(_, path, _)| path.len())
        .max()
        .unwrap_or(0);
    routes
        .iter()
        .map(|(method, path, what)| format!("      {method:<6} {path:<width$}  {what}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, CliError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn no_arguments_is_serve_with_its_defaults() {
        assert_eq!(
            parse_strs(&[]).unwrap(),
            Command::Serve(Options::serve_defaults())
        );
        assert_eq!(
            parse_strs(&["serve"]).unwrap(),
            Command::Serve(Options::serve_defaults())
        );
    }

    #[test]
    fn flags_in_both_spellings_and_either_side_of_the_command() {
        let Command::Demo(o) = parse_strs(&[
            "--port=0",
            "demo",
            "--wechat-port",
            "4001",
            "--data-dir",
            "/tmp/x",
            "--order-ttl=2",
            "--sweep-every",
            "5",
            "--retry-scale",
            "0.001",
            "--refund-delay=0",
            "--refund-spacing",
            "5",
            "--webhook-fail=3",
            "--keep",
        ])
        .unwrap() else {
            panic!("expected demo");
        };
        assert_eq!(o.port, 0);
        assert_eq!(o.wechat_port, 4001);
        assert_eq!(o.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(o.order_ttl, Duration::from_secs(2));
        assert_eq!(o.sweep_every, Duration::from_secs(5));
        assert_eq!(o.retry_scale, 0.001);
        assert_eq!(o.refund_delay, Duration::ZERO);
        assert_eq!(o.refund_spacing, Duration::from_secs(5));
        assert_eq!(o.webhook_fail, 3);
        assert!(o.keep);
        let Command::Serve(o) =
            parse_strs(&["--webhook-url", "http://127.0.0.1:8080/hooks"]).unwrap()
        else {
            panic!("expected serve");
        };
        assert_eq!(
            o.webhook_url.as_deref(),
            Some("http://127.0.0.1:8080/hooks")
        );
        assert_eq!(Options::serve_defaults().webhook_url, None);
        let Command::Serve(o) =
            parse_strs(&["--push-url", "http://127.0.0.1:9000/notify/wechat-mp"]).unwrap()
        else {
            panic!("expected serve");
        };
        assert_eq!(
            o.push_url.as_deref(),
            Some("http://127.0.0.1:9000/notify/wechat-mp")
        );
        assert!(parse_strs(&["--push-url", "not a url"]).is_err());
        assert!(parse_strs(&["demo", "--push-url", "http://127.0.0.1:9/x"]).is_err());
    }

    #[test]
    fn reconcile_takes_an_optional_date_and_serve_flags() {
        let Command::Reconcile(o, date) =
            parse_strs(&["reconcile", "2026-12-06", "--port", "4000"]).unwrap()
        else {
            panic!("expected reconcile");
        };
        assert_eq!(o.port, 4000);
        assert_eq!(date, Some(time::macros::date!(2026 - 12 - 06)));
        assert_eq!(
            parse_strs(&["reconcile"]).unwrap(),
            Command::Reconcile(Options::serve_defaults(), None)
        );
        for bad in [
            &["reconcile", "2026-13-01"][..],
            &["reconcile", "2026-12-06", "2026-12-07"],
            &["demo", "2026-12-06"],
        ] {
            assert!(parse_strs(bad).is_err(), "{bad:?}");
        }
        assert!(usage().contains("sandbox reconcile [DATE]"));
    }

    #[test]
    fn help_wins() {
        assert_eq!(parse_strs(&["demo", "--help"]).unwrap(), Command::Help);
        assert_eq!(parse_strs(&["-h"]).unwrap(), Command::Help);
        assert_eq!(parse_strs(&["help"]).unwrap(), Command::Help);
        assert!(usage().contains("--retry-scale"));
        assert!(usage().contains("--refund-delay SECONDS"));
        assert!(usage().contains("--refund-spacing SECONDS"));
        assert!(usage().contains("--webhook-fail N"));
        assert!(usage().contains("--webhook-url URL"));
    }

    /// The route lists are the ones the routers are built from, so a route added to either
    /// port and missing here fails this test, as does a help that stopped printing a list.
    #[test]
    fn the_help_lists_every_route_the_sandbox_serves() {
        let help = usage();
        let listed = |method: &str, path: &str| {
            help.lines().any(|line| {
                let mut words = line.split_whitespace();
                words.next() == Some(method) && words.next() == Some(path)
            })
        };
        let functions = crate::router::ENDPOINTS.iter().map(|e| (e.method, e.path));
        let simulator = crate::simulator::wechat_endpoints()
            .chain(crate::simulator::control_endpoints())
            .map(|e| (e.method, e.path));
        let all: Vec<_> = functions.chain(simulator).collect();
        for (method, path) in &all {
            assert!(
                listed(method, path),
                "{method} {path} is not in the help:\n{help}"
            );
        }
        // Both ports' routes are there, the simulator's controls included.
        for (method, path) in [
            ("POST", "/sessions"),
            ("GET", "/.well-known/jwks.json"),
            ("GET", "/orders/{out_trade_no}"),
            ("POST", "/v3/pay/transactions/jsapi"),
            ("GET", "/sns/jscode2session"),
            ("DELETE", "/sandbox/fail"),
        ] {
            assert!(all.contains(&(method, path)), "{method} {path}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        let e = |args: &[&str]| parse_strs(args).unwrap_err().0;
        assert!(e(&["--bogus"]).contains("--bogus"));
        assert!(e(&["-x"]).contains("-x"));
        assert!(e(&["frobnicate"]).contains("frobnicate"));
        assert!(e(&["--port"]).contains("needs a value"));
        assert!(e(&["--port", "70000"]).contains("--port"));
        assert!(e(&["--order-ttl", "0"]).contains("--order-ttl"));
        assert!(e(&["--order-ttl", "7201"]).contains("--order-ttl"));
        assert!(e(&["--retry-scale", "-1"]).contains("--retry-scale"));
        assert!(e(&["--retry-scale", "NaN"]).contains("--retry-scale"));
        assert!(e(&["--refund-delay", "-1"]).contains("--refund-delay"));
        assert!(e(&["--refund-delay", "1.5"]).contains("--refund-delay"));
        assert!(e(&["--refund-spacing", "3601"]).contains("--refund-spacing"));
        assert!(e(&["--webhook-fail", "-1"]).contains("--webhook-fail"));
        assert!(e(&["--webhook-fail", "1001"]).contains("--webhook-fail"));
        assert!(e(&["--webhook-url", "http://example.com/hook"]).contains("https"));
        assert!(e(&["--webhook-url", "not a url"]).contains("--webhook-url"));
        assert!(e(&["demo", "--webhook-url", "https://example.com/h"]).contains("serve"));
        assert!(e(&["--keep"]).contains("demo"));
        assert!(e(&["demo", "serve"]).contains("serve"));
        assert!(e(&["--port", "3000", "--wechat-port", "3000"]).contains("different"));
    }
}
