//! The `macvswitch` binary: parses the command line and prints results.
//! Errors are one line on stderr; exit status 2 for bad input, 1 otherwise.

use std::process::ExitCode;

use clap::{
    Parser as _,
    error::{ContextKind, ContextValue},
};
use macvswitch::{
    Error,
    cli::{Cli, Command, EndpointCommand, UplinkCommand},
    kernel::datapath::{PinLayout, set_attach_choice},
    model::config::Config,
    ops::progress::Reporter,
    ops::{instance::Instance, store::StateDir},
    report,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if error.use_stderr() => {
            eprintln!("{}", usage_error(&error));
            return ExitCode::from(2);
        }
        Err(error) => {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
    };
    // The daemon reports what it does at info; commands only warn.
    let level = match cli.command {
        Command::Daemon { .. } => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    set_attach_choice(cli.attach);
    let instance = Instance {
        state_dir: StateDir::new(&cli.state_dir),
        pins: PinLayout::new(&cli.bpffs),
        mark_mask: cli.mark_mask,
        // A bar for a person at a terminal; scripts get the output alone.
        progress: if std::io::IsTerminal::is_terminal(&std::io::stdout()) && !cli.quiet {
            Reporter(std::sync::Arc::new(report::TerminalBar::new()))
        } else {
            Reporter::default()
        },
    };
    // A command that fails, and `reset`, leave the state directory as they
    // found it: no lock file or directory made for nothing.
    let found = instance.state_dir.found();
    let reset = matches!(cli.command, Command::Reset { .. });
    let result = runtime.block_on(run(&instance, cli.command, cli.quiet));
    if result.is_err() || reset {
        instance.state_dir.leave_as_found(found);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::from(error.exit_code())
        }
    }
}

/// What a command line clap refused gets: one line naming the option, the
/// value and the rule, with clap's suggestion and where to read more; or,
/// for a bare command (`macvswitch`, `macvswitch endpoint`), its usage and
/// command list.
fn usage_error(error: &clap::Error) -> String {
    use clap::error::ErrorKind;
    let rendered = error.render().to_string();
    if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return rendered.trim_end().to_string();
    }
    let mut line = rendered
        .lines()
        .next()
        .unwrap_or("error: invalid arguments")
        .to_string();
    if let Some(ContextValue::Strings(values)) = error.get(ContextKind::ValidValue) {
        line += &format!(" (allowed: {})", values.join(", "));
    }
    if error.kind() == ErrorKind::MissingRequiredArgument
        && let Some(ContextValue::Strings(missing)) = error.get(ContextKind::InvalidArg)
    {
        line += &format!(" {}", missing.join(", "));
    }
    for kind in [ContextKind::SuggestedSubcommand, ContextKind::SuggestedArg] {
        match error.get(kind) {
            Some(ContextValue::String(similar)) => line += &format!("; did you mean '{similar}'?"),
            Some(ContextValue::Strings(similar)) if !similar.is_empty() => {
                line += &format!("; did you mean '{}'?", similar.join("' or '"))
            }
            _ => {}
        }
    }
    if !matches!(
        error.kind(),
        ErrorKind::UnknownArgument
            | ErrorKind::InvalidSubcommand
            | ErrorKind::MissingRequiredArgument
            | ErrorKind::MissingSubcommand
    ) {
        // The line already states the rule.
        return line;
    }
    // The usage names the subcommand the error is about.
    let command: Vec<&str> = rendered
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("Usage: "))
        .map(|usage| {
            usage
                .split_whitespace()
                .take_while(|word| !word.starts_with(['[', '<', '-']))
                .collect()
        })
        .unwrap_or_default();
    let command = if command.is_empty() {
        "macvswitch".to_string()
    } else {
        command.join(" ")
    };
    format!("{line}; see `{command} --help`")
}

/// An error about the configuration's contents names the file first.
fn in_file(file: &std::path::Path, error: Error) -> Error {
    match error {
        Error::Invalid {
            option,
            value,
            allowed,
        } if !option.starts_with("--") && option != "FILE" => Error::Invalid {
            option: "FILE",
            value: format!("{} {option} {value}", file.display())
                .trim_end()
                .to_string(),
            allowed,
        },
        other => other,
    }
}

/// The error and its sources, joined on one line.
fn one_line(error: &Error) -> String {
    let mut line = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        line += &format!(": {cause}");
        source = cause.source();
    }
    line.replace('\n', " ")
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
}

/// One line saying what a command changed, unless `--quiet`.
fn changed(quiet: bool, line: impl std::fmt::Display) {
    if !quiet {
        println!("{line}");
    }
}

async fn run(instance: &Instance, command: Command, quiet: bool) -> Result<(), Error> {
    let instance = instance.clone();
    match command {
        Command::Endpoint(EndpointCommand::Add(args)) => {
            let record = instance.add(args.spec()?).await?;
            print!("{}", report::endpoint_details(&instance, &record));
        }
        Command::Endpoint(EndpointCommand::Set(args)) => {
            let record = instance.set(args.request()).await?;
            print!("{}", report::endpoint_details(&instance, &record));
        }
        Command::Uplink(UplinkCommand::Set(args)) => {
            let record = instance.uplink_set(args.request()).await?;
            print!("{}", report::uplink_text(&record, None));
        }
        Command::Uplink(UplinkCommand::List { json }) => {
            let maps = instance.maps()?;
            let records = instance.uplinks()?;
            let mut rows = Vec::new();
            for record in &records {
                let counters = match &maps {
                    Some(maps) => Some(maps.uplink_counters(record.ifindex)?),
                    None => None,
                };
                rows.push((record, counters));
            }
            if json {
                print_json(&serde_json::Value::Array(
                    rows.iter()
                        .map(|(r, c)| report::uplink_json(r, c.as_ref()))
                        .collect(),
                ));
            } else {
                for (record, counters) in &rows {
                    print!("{}", report::uplink_text(record, counters.as_ref()));
                }
            }
        }
        Command::Uplink(UplinkCommand::Show { dev, json }) => {
            let record = instance.uplink(&dev)?;
            let counters = match instance.maps()? {
                Some(maps) => Some(maps.uplink_counters(record.ifindex)?),
                None => None,
            };
            if json {
                print_json(&report::uplink_json(&record, counters.as_ref()));
            } else {
                print!("{}", report::uplink_text(&record, counters.as_ref()));
            }
        }
        Command::Endpoint(EndpointCommand::Del { name, force }) => {
            let record = instance.del(&name, force).await?;
            changed(quiet, format!("deleted endpoint {}", record.name));
        }
        Command::Endpoint(EndpointCommand::List { json }) => {
            let records = instance.list()?;
            if json {
                let all = records
                    .iter()
                    .map(|r| report::endpoint_json(&instance, r))
                    .collect();
                print_json(&serde_json::Value::Array(all));
            } else {
                print!("{}", report::endpoint_table(&instance, &records));
            }
        }
        Command::Endpoint(EndpointCommand::Show { name, json }) => {
            let record = instance.get(&name)?;
            if json {
                print_json(&report::endpoint_json(&instance, &record));
            } else {
                print!("{}", report::endpoint_details(&instance, &record));
            }
        }
        Command::Stats { name, json } => {
            let records = match name {
                Some(name) => vec![instance.get(&name)?],
                None => instance.list()?,
            };
            let rows = report::stats_rows(&instance, &records)?;
            if json {
                print_json(&serde_json::Value::Array(
                    rows.iter().map(report::stats_json).collect(),
                ));
            } else {
                for row in &rows {
                    print!("{}", report::stats_text(row));
                }
            }
        }
        Command::Show { json } => {
            if json {
                print_json(&macvswitch::tree::json(&instance)?);
            } else {
                print!("{}", macvswitch::tree::text(&instance)?);
            }
        }
        Command::Top {
            once,
            json,
            interval,
        } => {
            let interval = macvswitch::top::check_interval(interval)?;
            if once {
                let rates = macvswitch::top::once(&instance, interval).await?;
                if json {
                    print_json(&serde_json::Value::Array(
                        rates.iter().map(macvswitch::top::Rates::json).collect(),
                    ));
                } else {
                    print!("{}", macvswitch::top::text(&rates));
                }
            } else if macvswitch::top::interactive() {
                macvswitch::top::live(&instance, interval)?;
            } else {
                return Err(Error::invalid(
                    "top",
                    "",
                    "needs a terminal; use --once (and --json) in scripts",
                ));
            }
        }
        Command::Monitor(args) => macvswitch::monitor::run(&instance, &args).await?,
        Command::Trace(args) => {
            let trace = macvswitch::trace::run(&instance, &args)?;
            if args.json {
                print_json(&trace.json());
            } else {
                print!("{}", trace.text());
            }
            if let Some(why) = trace.disagreement {
                return Err(Error::Refused(format!("trace: {why}")));
            }
        }
        Command::Reset { force } => {
            let removed = instance.reset(force).await?;
            changed(quiet, removed);
        }
        Command::Apply { file, dry_run } => {
            let config = Config::load(&file)?;
            instance
                .apply(&config, dry_run, |line| println!("{line}"))
                .await
                .map_err(|error| in_file(&file, error))?;
        }
        Command::Export => {
            let state = instance.state_dir.load()?;
            print!("{}", Config::from_state(&state).to_toml());
        }
        Command::Reload => {
            let endpoints = instance.session().await?.reload().await?;
            changed(
                quiet,
                format!("reload: a fresh copy of the programs runs on {endpoints} endpoints"),
            );
        }
        Command::Restore => {
            let report = instance.session().await?.restore().await?;
            for line in report.lines() {
                println!("{line}");
            }
            if let Some(first) = report.failed.first() {
                return Err(Error::Refused(first.clone()));
            }
        }
        Command::Daemon { metrics } => macvswitch::daemon::run(&instance, metrics).await?,
        Command::Exec(args) => {
            let record = instance.get(&args.name)?;
            let tap = instance.tap_path(&args.name);
            match macvswitch::ops::handoff::exec(
                &record,
                &tap,
                args.fd,
                args.queues,
                args.user.as_deref(),
                &args.command,
            )? {}
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "macvswitch", &mut std::io::stdout());
        }
        Command::Man { dir } => {
            let written = macvswitch::cli::write_man_pages(&dir)
                .map_err(|e| Error::io(format!("writing man pages into {}", dir.display()), e))?;
            println!("wrote {} man pages into {}", written.len(), dir.display());
        }
        Command::LibvirtXml { name } => {
            print!(
                "{}",
                macvswitch::ops::handoff::libvirt_xml(&instance.get(&name)?)?
            );
        }
    }
    Ok(())
}
