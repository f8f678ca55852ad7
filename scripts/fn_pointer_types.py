"""Append `pub type PFN_<name> = unsafe extern "C" fn(...) -> ...;` for each function bindgen declared.

Reads bindgen output (one `unsafe extern "C" { ... }` block of `pub fn` declarations) and prints
the function-pointer aliases plus a list macro the loader expands into its lazily resolved table.
"""
import re
import sys

src = open(sys.argv[1]).read()
decls = re.findall(r"pub fn (\w+)\s*\((.*?)\)\s*(->\s*[^;]+)?;", src, flags=re.S)
if not decls:
    sys.exit("no function declarations found in bindgen output")
out = ["", "/// Function-pointer types of every bound function, in the headers' exact signatures."]
names = []
for name, args, ret in sorted(decls):
    args = " ".join(args.split())
    ret = (" " + " ".join(ret.split())) if ret else ""
    out.append(f'pub type PFN_{name} = unsafe extern "C" fn({args}){ret};')
    names.append(name)
out.append("")
out.append("/// Invokes `$m!{ name: PFN_name, ... }` with every bound function.")
out.append("#[macro_export]")
out.append("macro_rules! for_each_acl_function {")
out.append("    ($m:ident) => {")
out.append("        $m! {")
for n in names:
    out.append(f"            {n}: PFN_{n},")
out.append("        }")
out.append("    };")
out.append("}")
print("\n".join(out))

# Error-code names, for messages: the first header name of each value.
codes = re.findall(r"pub const ((?:ACL_ERROR|ACL_SUCCESS)\w*): [^=]+= (-?\d+);", src)
seen = {}
for name, value in codes:
    seen.setdefault(int(value), name)
out = ["", "/// The header name of an AscendCL error code (the first name the headers give to that value)."]
out.append("pub fn acl_error_name(code: aclError) -> Option<&'static str> {")
out.append("    Some(match code {")
for value in sorted(seen):
    out.append(f'        {value} => "{seen[value]}",')
out.append("        _ => return None,")
out.append("    })")
out.append("}")
print("\n".join(out))
