/*
 * lg_cmd_lua.c - `lugger lua FILE [ARGS...]`: runs a Lua file inside the
 * host with the full LuaJIT library (ffi, io, os, debug, jit: this is for
 * trusted code such as the busted specs, not for user scripts), the
 * embedded lugger.* modules requirable, `arg` set as the standalone
 * interpreter sets it, and Debian's Lua module directories on the search
 * paths so that /usr/share/lua/5.1/busted and its C modules load.
 * Because the binary exports its symbols, ffi.C.lg_ffi_* resolve.
 *
 * `lugger lua --busted [ARGS...]` runs busted (lua/lugger/busted.lua) with
 * ARGS as its command line: users' specs of their filters (lugger.testing).
 */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "cmd/lg_cmd.h"
#include "pipeline/lg_lua.h"

static const char *const lua_paths[] = {"/usr/share/lua/5.1/?.lua",
                                        "/usr/share/lua/5.1/?/init.lua", NULL};
static const char *const c_paths[] = {"/usr/lib/x86_64-linux-gnu/lua/5.1/?.so",
                                      NULL};

/* Appends each entry of `add` to package[field] unless already there. */
static void extend_path(lua_State *L, const char *field,
                        const char *const *add) {
  lua_getglobal(L, "package");
  for (; *add != NULL; add++) {
    lua_getfield(L, -1, field);
    const char *cur = lua_tostring(L, -1);
    int have = 0;
    if (cur != NULL) {
      size_t n = strlen(*add);
      for (const char *p = strstr(cur, *add); p != NULL && !have;
           p = strstr(p + 1, *add))
        have = (p == cur || p[-1] == ';') && (p[n] == ';' || p[n] == '\0');
    }
    if (!have) {
      lua_pushstring(L, cur != NULL && *cur ? ";" : "");
      lua_pushstring(L, *add);
      lua_concat(L, 3);
      lua_setfield(L, -2, field);
    } else {
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL)
    msg =
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  lua_getglobal(L, "debug");
  lua_getfield(L, -1, "traceback");
  lua_pushstring(L, msg);
  lua_pushinteger(L, 2);
  lua_call(L, 2, 1);
  return 1;
}

int lg_cmd_lua(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
      strcmp(argv[1], "-h") == 0) {
    fprintf(argc < 2 ? stderr : stdout,
            "usage: lugger lua FILE [ARGS...]\n"
            "       lugger lua --busted [BUSTED OPTIONS] [SPEC...]\n");
    return argc < 2 ? 2 : 0;
  }
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "lugger lua: cannot create a Lua state\n");
    return 1;
  }
  luaL_openlibs(L);
  lg__lua_preload(L);
  extend_path(L, "path", lua_paths);
  extend_path(L, "cpath", c_paths);
  /* os.exit closes the state first, as when the script returns, so that
   * ffi.gc finalizers (the parse helpers' scratch buffers) run and the
   * sanitizer builds see no leak. */
  static const char exit_src[] =
      "local exit = os.exit\n"
      "os.exit = function(code) return exit(code, true) end\n";
  if (luaL_dostring(L, exit_src) != 0) {
    fprintf(stderr, "lugger lua: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return 1;
  }

  /* arg[0] is the script, arg[1..] its arguments, arg[-1] the host. */
  lua_createtable(L, argc - 2, 2);
  lua_pushstring(L, "lugger");
  lua_rawseti(L, -2, -1);
  for (int k = 1; k < argc; k++) {
    lua_pushstring(L, argv[k]);
    lua_rawseti(L, -2, k - 1);
  }
  lua_setglobal(L, "arg");

  lua_pushcfunction(L, traceback);
  int rc = 0;
  static const char busted_src[] = "require('lugger.busted').run()";
  int busted = strcmp(argv[1], "--busted") == 0;
  if ((busted ? luaL_loadbuffer(L, busted_src, sizeof busted_src - 1,
                                "=lugger lua --busted")
              : luaL_loadfile(L, argv[1])) != 0) {
    fprintf(stderr, "lugger lua: %s\n", lua_tostring(L, -1));
    rc = 1;
  } else {
    for (int k = 2; k < argc; k++)
      lua_pushstring(L, argv[k]);
    if (lua_pcall(L, argc - 2, 0, 1) != 0) {
      fprintf(stderr, "lugger lua: %s\n", lua_tostring(L, -1));
      rc = 1;
    }
  }
  fflush(stdout);
  lua_close(L);
  return rc;
}
