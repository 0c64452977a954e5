//! `baton completions` and `baton man`: shell completion scripts and man
//! pages of both programs, generated from their clap definitions so that
//! they never drift from `--help`. Nothing here talks to a node.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use super::CliError;
use super::args::{Cli, Program};
use crate::config::Flags;

/// The clap definition of `program`.
fn command(program: Program) -> clap::Command {
    match program {
        Program::Baton => Cli::command(),
        Program::Batond => Flags::command(),
    }
}

fn name(program: Program) -> &'static str {
    match program {
        Program::Baton => "baton",
        Program::Batond => "batond",
    }
}

/// Writes the completion script of `program` for `shell` to `out`.
pub(super) fn completions(
    shell: clap_complete::Shell,
    program: Program,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(program), name(program), &mut script);
    out.write_all(&script).map_err(CliError::Output)
}

/// Writes the man page of `program` (roff) to `out`.
pub(super) fn man(program: Program, out: &mut dyn Write) -> Result<(), CliError> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command(program))
        .render(&mut page)
        .map_err(CliError::Output)?;
    out.write_all(&page).map_err(CliError::Output)
}

/// Writes the man pages of `program` and of each of its subcommands
/// (`baton-members.1`...) into `dir`, and lists them on `out`.
pub(super) fn man_pages(program: Program, dir: &Path, out: &mut dyn Write) -> Result<(), CliError> {
    let failed = |source| CliError::WriteFile {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    clap_mangen::generate_to(command(program), dir).map_err(failed)?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)
        .map_err(failed)?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|f| {
            let stem = f.strip_suffix(".1").unwrap_or_default();
            stem == name(program) || stem.starts_with(&format!("{}-", name(program)))
        })
        .collect();
    pages.sort();
    for page in pages {
        writeln!(out, "{}", dir.join(page).display()).map_err(CliError::Output)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>) -> Result<(), CliError>) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn completions_know_every_command_and_flag() {
        let bash = text(|o| completions(clap_complete::Shell::Bash, Program::Baton, o));
        assert!(bash.contains("complete -F _baton"), "{bash}");
        for word in [
            "members",
            "sessions",
            "watch",
            "completions",
            "--json",
            "--api",
        ] {
            assert!(
                bash.contains(word),
                "{word} missing from baton's bash completions"
            );
        }
        let batond = text(|o| completions(clap_complete::Shell::Zsh, Program::Batond, o));
        assert!(batond.starts_with("#compdef batond"), "{batond}");
        for flag in [
            "--bootstrap",
            "--swim-listen",
            "--profile",
            "--network-key-file",
        ] {
            assert!(
                batond.contains(flag),
                "{flag} missing from batond's zsh completions"
            );
        }
        for shell in [
            clap_complete::Shell::Fish,
            clap_complete::Shell::Elvish,
            clap_complete::Shell::PowerShell,
        ] {
            assert!(!text(|o| completions(shell, Program::Batond, o)).is_empty());
        }
    }

    #[test]
    fn completions_and_man_need_no_node() {
        for args in [
            &["baton", "--api", "no such node", "completions", "bash"][..],
            &["baton", "--api", "no such node", "man", "batond"],
        ] {
            let mut out = Vec::new();
            assert_eq!(crate::cli::run_to(args, &mut out), 0, "{args:?}");
            assert!(!out.is_empty(), "{args:?}");
        }
    }

    #[test]
    fn man_pages_are_roff_with_the_options() {
        let page = text(|o| man(Program::Batond, o));
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page}");
        assert!(page.contains(".TH batond 1"), "{page}");
        assert!(page.contains("\\-\\-bootstrap"), "{page}");
        let page = text(|o| man(Program::Baton, o));
        assert!(page.contains(".TH baton 1"), "{page}");
        assert!(page.contains("baton\\-members(1)"), "{page}");
    }

    #[test]
    fn man_pages_go_to_a_directory_one_per_command() {
        let dir = std::env::temp_dir().join(format!("baton-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let listed = text(|o| man_pages(Program::Baton, &dir, o));
        let listed = text(|o| {
            man_pages(Program::Batond, &dir, o).map(|()| {
                o.extend_from_slice(listed.as_bytes());
            })
        });
        for page in ["baton.1", "baton-members.1", "baton-man.1", "batond.1"] {
            assert!(dir.join(page).is_file(), "{page} not written");
            assert!(listed.contains(page), "{page} not listed in {listed}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
