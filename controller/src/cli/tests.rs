use clap::CommandFactory as _;

use super::Cli;

/// Every command a person can run, with its path.
fn commands(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let path = format!("{path} {}", sub.get_name());
        out.push((path.clone(), sub.clone()));
        commands(sub, &path, out);
    }
}

#[test]
fn help_reads_as_one_tool() {
    let mut root = Cli::command();
    root.build();
    let mut all = vec![("macvswitch".to_string(), root.clone())];
    commands(&root, "macvswitch", &mut all);
    for (path, command) in &all {
        let leaf = !command.has_subcommands();
        let after = command
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        assert!(
            !leaf || after.contains("Example"),
            "`{path} --help` shows no example"
        );
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            assert!(
                arg.get_help().is_some(),
                "`{path}`: {id} has no description"
            );
            let names = if arg.get_action().takes_values() {
                arg.get_value_names().unwrap_or_default()
            } else {
                &[]
            };
            for name in names {
                assert!(
                    !name.contains('_') && name.as_str() != "DEV",
                    "`{path}`: {id} shows <{name}>: a word, please"
                );
            }
        }
    }
}
