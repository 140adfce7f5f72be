//! A generated C program with big debug info (thousands of structs, unions,
//! enums, typedefs and functions over many compilation units), for the DWARF
//! load benchmark and, smaller, for the tests (std only: included by path).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

/// How big a program to generate.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Compilation units (and headers; header k includes header k - 1).
    pub units: usize,
    /// Structs defined in each header.
    pub structs: usize,
    /// Functions defined in each unit.
    pub functions: usize,
}

impl Shape {
    /// About 30 MB of DWARF (the benchmark's).
    #[allow(dead_code)]
    pub const BENCH: Shape = Shape {
        units: 48,
        structs: 240,
        functions: 100,
    };
    /// A few hundred KB, quick enough for a test's build (tests/build.rs).
    #[allow(dead_code)]
    pub const TEST: Shape = Shape {
        units: 6,
        structs: 12,
        functions: 10,
    };
}

/// Struct `i` of header `k`.
fn sname(k: usize, i: usize) -> String {
    format!("gs_{k}_{i}")
}

/// One header: `structs` structs, each with scalars, an array of arrays, an
/// enum, an anonymous union, a nested struct (from the one before), a
/// pointer to a struct of an earlier header, a function pointer and a
/// typedef.
fn header(k: usize, shape: &Shape) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "#ifndef GS_H{k}\n#define GS_H{k}");
    if k > 0 {
        let _ = writeln!(s, "#include \"gs{}.h\"", k - 1);
    }
    for i in 0..shape.structs {
        let n = sname(k, i);
        if i % 4 == 0 {
            let _ = writeln!(
                s,
                "enum {n}_state {{ {up}_IDLE, {up}_BUSY = 7, {up}_DONE = -1 }};",
                up = n.to_uppercase()
            );
        }
        let st = sname(k, i - i % 4);
        let _ = writeln!(s, "struct {n} {{");
        let _ = writeln!(s, "\tunsigned long {n}_id;\n\tint count;\n\tchar name[16];");
        let _ = writeln!(s, "\tshort grid[2][3];\n\tenum {st}_state state;");
        let _ = writeln!(
            s,
            "\tunion {{ unsigned int u_word; double u_real; unsigned char u_bytes[8]; }} u;"
        );
        let _ = writeln!(s, "\tunsigned int flag_a:3, flag_b:5;");
        if i % 4 != 0 {
            let _ = writeln!(s, "\tstruct {} inner;", sname(k, i - 1));
        }
        if k > 0 {
            let peer = sname((k * 7 + i) % k, (i * 13 + k) % shape.structs);
            let _ = writeln!(s, "\tstruct {peer} *peer;");
        }
        let _ = writeln!(s, "\tstruct {n} *next;");
        let _ = writeln!(s, "\tint (*cb)(struct {n} *, const char *);");
        let _ = writeln!(s, "}};\ntypedef struct {n} {n}_t;");
    }
    let _ = writeln!(s, "#endif");
    s
}

/// One unit: functions taking the header's structs, a global of each
/// fourth struct (for `peek`), and its own `struct gs_unit` (each unit's
/// differs, as same-named private structs do in real programs; names lead
/// to the first unit's), named by a typedef `a_gs_unit_K_t` past unit 0.
fn unit(k: usize, shape: &Shape) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "#include \"gs{k}.h\"");
    let _ = writeln!(s, "struct gs_unit {{ int unit_{k}; long pad_{k}; }};");
    if k > 0 {
        let _ = writeln!(s, "typedef struct gs_unit a_gs_unit_{k}_t;");
        let _ = writeln!(s, "a_gs_unit_{k}_t gs_unit_var_{k};");
    } else {
        let _ = writeln!(s, "struct gs_unit gs_unit_var_0;");
    }
    for i in (0..shape.structs).step_by(4) {
        let n = sname(k, i);
        let _ = writeln!(s, "struct {n} gs_var_{k}_{i};");
    }
    for j in 0..shape.functions {
        let a = sname(k, j % shape.structs);
        let b = sname(k, (j * 5 + 1) % shape.structs);
        let _ = writeln!(
            s,
            "__attribute__((noinline)) long gs_fn_{k}_{j}(struct {a} *a, {b}_t *b, int n)\n\
             {{\n\tlong r = (long)a->{a}_id + a->count + n;\n\
             \tif (b)\n\t\tr += b->name[0] + b->u.u_word;\n\treturn r;\n}}"
        );
    }
    s
}

/// `main` calls the first function of each unit (so every unit is linked)
/// and sets `gs_var_K_0.count` to K + 1; with `wait` it then prints
/// `ready` and sleeps until killed (a target for `peek`).
fn main_c(shape: &Shape) -> String {
    let mut s = String::from("#include <stdio.h>\n#include <string.h>\n#include <unistd.h>\n");
    for k in 0..shape.units {
        let _ = writeln!(s, "#include \"gs{k}.h\"");
        let a = sname(k, 0);
        let b = sname(k, 1 % shape.structs);
        let _ = writeln!(s, "long gs_fn_{k}_0(struct {a} *a, {b}_t *b, int n);");
        let _ = writeln!(s, "extern struct {a} gs_var_{k}_0;");
    }
    s.push_str("int main(int argc, char **argv)\n{\n\tlong r = 0;\n");
    for k in 0..shape.units {
        let _ = writeln!(
            s,
            "\tgs_var_{k}_0.count = {};\n\tr += gs_fn_{k}_0(&gs_var_{k}_0, 0, {k});",
            k + 1
        );
    }
    s.push_str(
        "\tprintf(\"%ld\\n\", r);\n\tif (argc > 1 && strcmp(argv[1], \"wait\") == 0) {\n\
         \t\tprintf(\"ready\\n\");\n\t\tfflush(stdout);\n\t\tfor (;;)\n\t\t\tpause();\n\t}\n\
         \treturn 0;\n}\n",
    );
    s
}

/// Writes the sources under `dir` and builds `dir/bigdwarf` with
/// `gcc -g -O0`, two compilers at a time. Returns the binary.
pub fn generate(dir: &Path, shape: &Shape) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut sources = Vec::new();
    for k in 0..shape.units {
        std::fs::write(dir.join(format!("gs{k}.h")), header(k, shape))?;
        let c = dir.join(format!("gs{k}.c"));
        std::fs::write(&c, unit(k, shape))?;
        sources.push(c);
    }
    let main = dir.join("main.c");
    std::fs::write(&main, main_c(shape))?;
    sources.push(main);
    let mut objects = Vec::new();
    for chunk in sources.chunks(2) {
        let mut running = Vec::new();
        for c in chunk {
            let o = c.with_extension("o");
            running.push(
                Command::new("gcc")
                    .args(["-g", "-O0", "-c", "-o"])
                    .arg(&o)
                    .arg(c)
                    .spawn()?,
            );
            objects.push(o);
        }
        for mut child in running {
            check(child.wait()?, "gcc -c")?;
        }
    }
    let bin = dir.join("bigdwarf");
    let status = Command::new("gcc")
        .arg("-o")
        .arg(&bin)
        .args(&objects)
        .status()?;
    check(status, "gcc (link)")?;
    Ok(bin)
}

fn check(status: std::process::ExitStatus, what: &str) -> std::io::Result<()> {
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("{what} failed: {status}")))
    }
}
