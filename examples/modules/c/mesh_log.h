/*
 * mesh_log: send log records to the mesh's central log receiver (docs/logging.md).
 *
 * Wire format: a 4-byte big-endian length, then that many bytes of UTF-8 JSON. The receiver's
 * address comes from $MESH_LOG_SERVER ("host:port", default 127.0.0.1:9020; "none" turns
 * sending off); the control room sets it for every module it starts. Sending never blocks the
 * module for long: a record that cannot be sent at once is dropped (stderr still has it), and
 * a receiver that is down is tried again two seconds later.
 */
#ifndef MESH_LOG_H
#define MESH_LOG_H

/* Read $MESH_LOG_SERVER and $MESH_LOG_CONSOLE; module is the name records carry. */
void mesh_log_init(const char *module);
/* One record. kv_json is a JSON object text ("{}" or e.g. "{\"port\": 8107}"). */
void mesh_log(int levelno, const char *event, const char *kv_json);
void mesh_log_close(void);

#define LOG_INFO 20
#define LOG_WARNING 30
#define LOG_ERROR 40

#endif
