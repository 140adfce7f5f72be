//! Process-wide signals for the interactive commands (`ri shell`, `ri top`).

use crate::Error;

/// Catches Ctrl-C for the whole process from now on (a command that waits
/// for it still stops on it; a raw-mode terminal reads it as a key), and
/// ends the process on SIGTERM and SIGHUP after `before_exit`: the kernel
/// then closes every probe's descriptor, which detaches them all.
pub fn catch(before_exit: fn()) -> Result<(), Error> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use tokio::signal::unix::{SignalKind, signal};
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return ready_tx.send(Err(e)).unwrap_or(()),
        };
        rt.block_on(async {
            let sigs = (|| {
                Ok::<_, std::io::Error>((
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                    signal(SignalKind::hangup())?,
                ))
            })();
            let (mut int, mut term, mut hup) = match sigs {
                Ok(s) => s,
                Err(e) => return ready_tx.send(Err(e)).unwrap_or(()),
            };
            let _ = ready_tx.send(Ok(()));
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => { before_exit(); std::process::exit(143) }
                    _ = hup.recv() => { before_exit(); std::process::exit(129) }
                }
            }
        });
    });
    ready_rx
        .recv()
        .map_err(|_| Error::Usage("signal thread did not start".into()))?
        .map_err(Error::Io)
}
