/*
 * The C side of the nvme-fio ioengine, compiled against the headers of the
 * installed fio (see scripts/fio-headers.sh and build.rs).
 *
 * fio's structures (thread_data, io_u, fio_file, ioengine_ops) are large and
 * change between releases, so the Rust side never sees their layout: this
 * file owns the ops table, reads the fields each hook needs and passes them
 * as plain values, and offers a few setters. Everything else lives in Rust.
 *
 * fio's own functions are declared weak: fio resolves them when it loads the
 * engine, and the crate's unit tests link without fio.
 */
#include <errno.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fio.h"
#include "optgroup.h"

#pragma weak log_err

/* Values of a job, read once by setup and init. */
struct nvme_fio_job {
	const char *name;
	unsigned int thread_number;
	unsigned int use_thread;
	unsigned int iodepth;
	unsigned int nr_files;
	unsigned int mem_align;
	unsigned long long min_bs[3];
	unsigned long long max_bs[3];
};

/* Implemented in Rust (src/hooks.rs). `data` is td->io_ops_data. */
extern int nvme_fio_rs_setup(void **data, const struct nvme_fio_job *job, void *td);
extern int nvme_fio_rs_init(void **data, const struct nvme_fio_job *job, void *td);
extern int nvme_fio_rs_iomem_alloc(void *data, size_t len, void **buf);
extern void nvme_fio_rs_iomem_free(void *data);
extern int nvme_fio_rs_queue(void *data, struct io_u *io_u, int ddir, uint64_t offset,
			     uint64_t len, void *buf, uintptr_t file, unsigned int index);
extern int nvme_fio_rs_commit(void *data);
extern int nvme_fio_rs_getevents(void *data, unsigned int min, unsigned int max,
				 const struct timespec *t);
extern struct io_u *nvme_fio_rs_event(void *data, int ev);
extern char *nvme_fio_rs_errdetails(unsigned int index);
extern void nvme_fio_rs_cleanup(void *data);
extern int nvme_fio_rs_open_file(void *data, uintptr_t file);

/* Directions as the Rust side names them (fio's enum fio_ddir may move). */
enum { NVME_FIO_READ = 0, NVME_FIO_WRITE = 1, NVME_FIO_TRIM = 2, NVME_FIO_SYNC = 3, NVME_FIO_OTHER = 4 };

/* The engine's version of fio's ABI, checked by fio when it loads us. */
const int nvme_fio_ioops_version = FIO_IOOPS_VERSION;

void nvme_fio_log(const char *msg)
{
	if (log_err)
		log_err("%s", msg);
	else
		fputs(msg, stderr);
}

const char *nvme_fio_file_name(void *tdp, unsigned int i)
{
	struct thread_data *td = tdp;

	if (i >= td->files_index || !td->files[i])
		return NULL;
	return td->files[i]->file_name;
}

/* What setup learned about file i: its size and the engine's handle. */
void nvme_fio_file_set(void *tdp, unsigned int i, uint64_t size, uintptr_t handle)
{
	struct thread_data *td = tdp;
	struct fio_file *f = td->files[i];

	f->real_file_size = size;
	f->filetype = FIO_TYPE_BLOCK;
	fio_file_set_size_known(f);
	FILE_SET_ENG_DATA(f, (void *)handle);
}

/* A finished io_u: 0 or an errno; a failed transfer moved no bytes. */
void nvme_fio_io_u_done(struct io_u *io_u, int error)
{
	io_u->error = error;
	io_u->resid = error ? io_u->xfer_buflen : 0;
}

unsigned int nvme_fio_io_u_index(const struct io_u *io_u)
{
	return io_u->index;
}

static void read_job(struct thread_data *td, struct nvme_fio_job *job)
{
	int d;

	memset(job, 0, sizeof(*job));
	job->name = td->o.name;
	job->thread_number = td->thread_number;
	job->use_thread = td->o.use_thread;
	job->iodepth = td->o.iodepth;
	job->nr_files = td->files_index;
	job->mem_align = td->o.mem_align;
	for (d = 0; d < 3; d++) {
		job->min_bs[d] = td->o.min_bs[d];
		job->max_bs[d] = td->o.max_bs[d];
	}
}

/* What fio's td_verror does (not exported by every fio build). */
static int set_td_error(struct thread_data *td, int err, const char *what)
{
	if (!err)
		return 0;
	if (!td->error) {
		td->error = err;
		snprintf(td->verror, sizeof(td->verror), "nvme-engine %s: %s", what, strerror(err));
	}
	if (td->parent && !td->parent->error) {
		td->parent->error = err;
		snprintf(td->parent->verror, sizeof(td->parent->verror), "%s", td->verror);
	}
	return err;
}

/* setup and init: the job's values to the Rust hook, its errno to fio. */
static int call_with_job(struct thread_data *td,
			 int (*hook)(void **, const struct nvme_fio_job *, void *), const char *what)
{
	struct nvme_fio_job job;

	read_job(td, &job);
	return set_td_error(td, hook(&td->io_ops_data, &job, td), what);
}

static int shim_setup(struct thread_data *td)
{
	return call_with_job(td, nvme_fio_rs_setup, "setup");
}

static int shim_init(struct thread_data *td)
{
	return call_with_job(td, nvme_fio_rs_init, "init");
}

static int shim_iomem_alloc(struct thread_data *td, size_t len)
{
	void *buf = NULL;
	int ret = nvme_fio_rs_iomem_alloc(td->io_ops_data, len, &buf);

	if (ret)
		return set_td_error(td, ret, "iomem_alloc");
	td->orig_buffer = buf;
	return 0;
}

static void shim_iomem_free(struct thread_data *td)
{
	nvme_fio_rs_iomem_free(td->io_ops_data);
	td->orig_buffer = NULL;
}

static enum fio_q_status shim_queue(struct thread_data *td, struct io_u *io_u)
{
	int ddir;

	fio_ro_check(td, io_u);
	switch (io_u->ddir) {
	case DDIR_READ:
		ddir = NVME_FIO_READ;
		break;
	case DDIR_WRITE:
		ddir = NVME_FIO_WRITE;
		break;
	case DDIR_TRIM:
		ddir = NVME_FIO_TRIM;
		break;
	case DDIR_SYNC:
	case DDIR_DATASYNC:
	case DDIR_SYNC_FILE_RANGE:
		ddir = NVME_FIO_SYNC;
		break;
	default:
		ddir = NVME_FIO_OTHER;
		break;
	}
	return (enum fio_q_status)nvme_fio_rs_queue(td->io_ops_data, io_u, ddir, io_u->offset,
						    io_u->xfer_buflen, io_u->xfer_buf,
						    (uintptr_t)FILE_ENG_DATA(io_u->file),
						    io_u->index);
}

static int shim_commit(struct thread_data *td)
{
	return nvme_fio_rs_commit(td->io_ops_data);
}

static int shim_getevents(struct thread_data *td, unsigned int min, unsigned int max,
			  const struct timespec *t)
{
	return nvme_fio_rs_getevents(td->io_ops_data, min, max, t);
}

static struct io_u *shim_event(struct thread_data *td, int ev)
{
	return nvme_fio_rs_event(td->io_ops_data, ev);
}

static char *shim_errdetails(struct io_u *io_u)
{
	/* fio frees the string. Called on the thread that reaped the io_u. */
	return nvme_fio_rs_errdetails(io_u->index);
}

static void shim_cleanup(struct thread_data *td)
{
	nvme_fio_rs_cleanup(td->io_ops_data);
	td->io_ops_data = NULL;
}

static int shim_open_file(struct thread_data *td, struct fio_file *f)
{
	return nvme_fio_rs_open_file(td->io_ops_data, (uintptr_t)FILE_ENG_DATA(f));
}

/*
 * close_file and invalidate: nothing to do. A file holds no descriptor (the
 * controller stays open for the other jobs until the last one cleans up),
 * and there is no page cache in front of the device.
 */
static int shim_file_nop(struct thread_data *td, struct fio_file *f)
{
	(void)td;
	(void)f;
	return 0;
}

static struct ioengine_ops nvme_fio_ops = {
	.name = "nvme-engine",
	.version = FIO_IOOPS_VERSION,
	.flags = FIO_RAWIO | FIO_NOEXTEND | FIO_NODISKUTIL | FIO_MEMALIGN | FIO_DISKLESSIO,
	.setup = shim_setup,
	.init = shim_init,
	.queue = shim_queue,
	.commit = shim_commit,
	.getevents = shim_getevents,
	.event = shim_event,
	.errdetails = shim_errdetails,
	.cleanup = shim_cleanup,
	.open_file = shim_open_file,
	.close_file = shim_file_nop,
	.invalidate = shim_file_nop,
	.iomem_alloc = shim_iomem_alloc,
	.iomem_free = shim_iomem_free,
};

struct ioengine_ops *nvme_fio_ops_table(void)
{
	return &nvme_fio_ops;
}
