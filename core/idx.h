/* idx.h: the IDX format of MNIST and Fashion-MNIST (LeCun et al.; the
 * Debian package dataset-fashion-mnist installs the four files gzipped under
 * /usr/share/datasets/fashion-mnist). Images become rows of n_in = rows*cols
 * features scaled to [0, 1]; labels become classes. gzip or plain files are
 * both read (zlib reads plain files transparently). */
#ifndef FL_IDX_H
#define FL_IDX_H

#include "core/dataset.h"

/* Loads an image file (magic 0x00000803, unsigned bytes, 3 dimensions) and
 * its label file (0x00000801, 1 dimension) into *ds (caller frees with
 * fl_dataset_free). n_classes is 1 + the largest label (at least 2). At most
 * max_rows rows are read when max_rows > 0. FL_EIO / FL_EPARSE with the file
 * and the offending field in err: bad magic, a dimension of zero, image and
 * label counts that differ, a truncated file. */
int fl_idx_load(fl_dataset *ds, const char *images_path, const char *labels_path, int64_t max_rows,
                char err[FL_ERR_LEN]);

/* Finds the training or test pair in dir: "train-images-idx3-ubyte[.gz]" and
 * "train-labels-idx1-ubyte[.gz]" (prefix "t10k" for test). */
int fl_idx_load_dir(fl_dataset *ds, const char *dir, int test, int64_t max_rows,
                    char err[FL_ERR_LEN]);

#endif
